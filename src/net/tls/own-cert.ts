// --tls-cert/--tls-key: serve a certificate obtained elsewhere (certbot, a company CA). It is
// reloaded when either file changes or on SIGHUP, so renewing it needs no restart; a reload that
// fails (say, the key is not written yet) keeps the current certificate and says so.

import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../../config.js';
import type { Logger } from '../../logger.js';
import type { KeyAndCertificate, ServingCertificate } from './serving-certificate.js';

/** Files are often rewritten in several steps (key, then certificate): reload once they settle. */
const SETTLE_MS = 200;

function readPair(certFile: string, keyFile: string): KeyAndCertificate {
  return { cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') };
}

export class OwnCertificate {
  private readonly watchers: fs.FSWatcher[] = [];
  private settleTimer: NodeJS.Timeout | undefined;
  private readonly onSighup = (): void => this.reload('SIGHUP');

  constructor(
    private readonly certFile: string,
    private readonly keyFile: string,
    private readonly serving: ServingCertificate,
    private readonly log: Logger,
  ) {}

  /** The first load: a certificate that cannot be served stops the start with a clear message. */
  load(): void {
    try {
      const installed = this.serving.install(readPair(this.certFile, this.keyFile));
      this.log.info({ names: installed.names, notAfter: installed.notAfter, fingerprint: installed.fingerprint }, 'serving certificate from --tls-cert');
    } catch (error) {
      throw new ConfigError('--tls-cert', `cannot use ${this.certFile} with ${this.keyFile}: ${(error as Error).message}`);
    }
  }

  /** Reloads on changes to either file and on SIGHUP until `stop`. */
  watch(): void {
    // Watch the folders, not the files: tools replace files by renaming (new inode) or by
    // repointing symlinks, which a watch on the old file would never see.
    const byDir = new Map<string, Set<string>>();
    for (const file of [this.certFile, this.keyFile]) {
      const dir = path.dirname(path.resolve(file));
      byDir.set(dir, (byDir.get(dir) ?? new Set()).add(path.basename(file)));
    }
    for (const [dir, names] of byDir) {
      const watcher = fs.watch(dir, (_event, name) => {
        if (name === null || names.has(name.toString())) this.reloadSoon();
      });
      watcher.on('error', (error) => this.log.error({ err: error, dir }, 'cannot watch the certificate files; SIGHUP still reloads'));
      this.watchers.push(watcher);
    }
    process.on('SIGHUP', this.onSighup);
  }

  stop(): void {
    clearTimeout(this.settleTimer);
    for (const watcher of this.watchers.splice(0)) watcher.close();
    process.off('SIGHUP', this.onSighup);
  }

  private reloadSoon(): void {
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => this.reload('file change'), SETTLE_MS);
  }

  private reload(reason: string): void {
    try {
      const installed = this.serving.install(readPair(this.certFile, this.keyFile));
      this.log.info({ reason, names: installed.names, notAfter: installed.notAfter, fingerprint: installed.fingerprint }, 'reloaded certificate');
    } catch (error) {
      this.log.error({ err: error, reason, certFile: this.certFile, keyFile: this.keyFile }, 'certificate reload failed; the current certificate keeps serving');
    }
  }
}
