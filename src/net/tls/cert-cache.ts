// --cache DIR: the ACME account key and the certificates survive restarts. Each CA directory
// gets its own subfolder (a staging certificate must never be served in production), files are
// private (0600) and replaced atomically (temp file, fsync, rename): a crash never leaves half a key.

import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { KeyAndCertificate } from './serving-certificate.js';

const PRIVATE_KEY_PEM = /-----BEGIN ([A-Z ]*)PRIVATE KEY-----[\s\S]+?-----END \1PRIVATE KEY-----\s*/;

/** Writes `data` to `file` so readers see either the old or the new content, never a mix. */
export async function writeFileAtomic(file: string, data: string): Promise<void> {
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await fs.open(temp, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** A folder name for a directory URL: https://acme-v02.api.letsencrypt.org/directory -> acme-v02.api.letsencrypt.org_directory */
function folderFor(directoryUrl: string): string {
  const url = new URL(directoryUrl);
  return `${url.host}${url.pathname}`.replace(/[^a-z0-9.-]+/gi, '_').replace(/^_+|_+$/g, '');
}

export class CertCache {
  readonly dir: string;

  constructor(cacheDir: string, directoryUrl: string) {
    this.dir = path.join(cacheDir, folderFor(directoryUrl));
  }

  readAccountKey(): Promise<string | undefined> {
    return readIfExists(this.accountKeyFile());
  }

  async writeAccountKey(keyPem: string): Promise<void> {
    await this.ensureDir();
    await writeFileAtomic(this.accountKeyFile(), keyPem);
  }

  /** The key and certificate chain stored under `name`, kept in one file so they always match. */
  async readCertificate(name: string): Promise<KeyAndCertificate | undefined> {
    const text = await readIfExists(this.certificateFile(name));
    const key = text && PRIVATE_KEY_PEM.exec(text)?.[0];
    if (!text || !key) return undefined;
    return { key: key.trim() + '\n', cert: text.replace(key, '') };
  }

  async writeCertificate(name: string, pair: KeyAndCertificate): Promise<void> {
    await this.ensureDir();
    await writeFileAtomic(this.certificateFile(name), `${pair.key.trim()}\n${pair.cert.trim()}\n`);
  }

  private accountKeyFile(): string {
    return path.join(this.dir, 'account.key.pem');
  }

  private certificateFile(name: string): string {
    return path.join(this.dir, `${name}.pem`);
  }

  private async ensureDir(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
  }
}
