// The TOML config file (--config): its top-level keys are the flags' long names. This module
// reads the file into (key, value, line) settings and writes settings back as TOML
// (--print-config); what each key means and accepts is the flag's business (src/cli.ts).

import { readFileSync } from 'node:fs';
import { parse, stringify, TomlError, type TomlValue } from 'smol-toml';
import { ConfigError } from './config.js';

export interface FileSetting {
  key: string;
  value: TomlValue;
  /** 1-based line the key is set on; undefined if it could not be found in the text. */
  line: number | undefined;
}

/** A mistake in the config file, as "FILE:LINE: message". */
export class ConfigFileError extends Error {
  constructor(file: string, line: number | undefined, message: string) {
    super(`${file}${line === undefined ? '' : `:${line}`}: ${message}`);
    this.name = 'ConfigFileError';
  }
}

/** A bad setting, as "FILE:LINE: KEY: detail". */
export function settingError(file: string, setting: FileSetting, detail: string): ConfigFileError {
  return new ConfigFileError(file, setting.line, `${setting.key}: ${detail}`);
}

/** The secrets, by the key someone might try in the file, and the variable that holds each. */
const SECRETS: Record<string, string> = { key: 'MLES_KEY', 'peer-key': 'MLES_PEER_KEY', 'api-key': 'MLES_API_KEY' };

/** "MLES_PEER_KEY", "peer_key" and "peer-key" all mean the same secret. */
function secretFor(key: string): string | undefined {
  return SECRETS[key.toLowerCase().replace(/_/g, '-').replace(/^mles-/, '')];
}

/** Reads and parses `file`; throws ConfigError (--config: unreadable) or ConfigFileError naming the line. */
export function readConfigFile(file: string): FileSetting[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError('--config', `cannot read ${file}: ${(error as Error).message}`);
  }
  let table: Record<string, TomlValue>;
  try {
    table = parse(text);
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    // smol-toml's message is a summary line, then a code frame that points at the column.
    const summary = error.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
    throw new ConfigFileError(file, error.line, `invalid TOML: ${summary}\n${error.codeblock.trimEnd()}`);
  }
  const lines = keyLines(text);
  const settings = Object.entries(table).map(([key, value]) => ({ key, value, line: lines.get(key) }));
  for (const setting of settings) {
    const secret = secretFor(setting.key);
    if (secret !== undefined) {
      throw settingError(file, setting, `secrets are not read from the config file: set ${secret} in the environment (e.g. systemd's EnvironmentFile=)`);
    }
  }
  return settings;
}

/**
 * The line on which each key first appears at the start of a line, as `key =`, `"key" =`,
 * `key.sub =` or `[key]`: smol-toml reports no positions for values, and the settings are all
 * top-level keys. (A multi-line string that contains such a line could mislead this; the line
 * is a pointer for a person, nothing depends on it.)
 */
function keyLines(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  text.split(/\r?\n/).forEach((line, index) => {
    const match = /^\s*(?:\[+\s*)?(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*[=.\]]/.exec(line);
    const key = match && (match[1] ?? match[2] ?? match[3])!;
    if (key !== null && !lines.has(key)) lines.set(key, index + 1);
  });
  return lines;
}

/**
 * `settings` as a TOML document that --config accepts, in the given order. The secrets are
 * never written: each one set (by its environment variable) is only mentioned in a comment, and
 * so is each `masked` setting (`key = "value with *** for its password"`).
 */
export function formatConfigFile(settings: Record<string, TomlValue>, secretsSet: string[], masked: string[] = []): string {
  const header = '# mles: effective settings (config file, then flags, then environment); unset ones are left out\n';
  const secrets = Object.entries(SECRETS)
    .filter(([, variable]) => secretsSet.includes(variable))
    .map(([key, variable]) => `# ${key} = "***"  (set by ${variable} in the environment, not by this file)\n`)
    .join('');
  const passwords = masked.map((line) => `# ${line}  (its password is not printed: put it back to use this line)\n`).join('');
  return header + stringify(settings) + '\n' + secrets + passwords;
}
