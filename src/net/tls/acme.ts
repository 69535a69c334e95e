// Certificates from any RFC 8555 CA (Let's Encrypt by default) over the TLS-ALPN-01 challenge,
// answered on our own TLS port. Orders and renewals run in the background; a failure is retried
// with backoff while the current certificate (if any) keeps serving.

import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import fs from 'node:fs';
import acme from 'acme-client';
import { ConfigError } from '../../config.js';
import type { Logger } from '../../logger.js';
import { ACME_TLS_ALPN, type AlpnChallengeResponder } from './alpn-responder.js';
import { CertCache } from './cert-cache.js';
import { describeCertificate, type KeyAndCertificate, type ServingCertificate } from './serving-certificate.js';

export const LETS_ENCRYPT = acme.directory.letsencrypt;

const DAY_MS = 86_400_000;
/** setTimeout's longest delay (about 24.8 days); longer waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const SELF_CHECK_TIMEOUT_MS = 10_000;
const DIRECTORY_TIMEOUT_MS = 10_000;
/** A directory is a few hundred bytes; anything this large is not one. */
const MAX_DIRECTORY_BYTES = 1024 * 1024;

export interface RetryPolicy {
  firstMs: number;
  maxMs: number;
}

/** Doubling from one minute to one hour keeps a broken setup under Let's Encrypt's failed-validation limit. */
const DEFAULT_RETRY: RetryPolicy = { firstMs: 60_000, maxMs: 3_600_000 };

export interface AcmeOptions {
  domains: string[];
  emails: string[];
  directoryUrl: string;
  /** PEM bundle to trust (besides the system roots) for the CA's API. */
  caFile: string | undefined;
  cacheDir: string | undefined;
  serving: ServingCertificate;
  responder: AlpnChallengeResponder;
  log: Logger;
  retry?: RetryPolicy;
}

/** Where our own TLS port answers, for checking a challenge before asking the CA to. */
export interface SelfAddress {
  host: string;
  port: number;
}

/** When to renew: a third of the lifetime (at most 30 days) before expiry. */
export function renewalTime(notBefore: Date, notAfter: Date): number {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  return notAfter.getTime() - Math.min(lifetime / 3, 30 * DAY_MS);
}

/** The certificate our TLS port presents to an acme-tls/1 handshake for `servername`. */
function presentedChallengeCertificate(self: SelfAddress, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      { host: self.host, port: self.port, servername, ALPNProtocols: [ACME_TLS_ALPN], rejectUnauthorized: false },
      () => {
        const cert = socket.getPeerX509Certificate();
        socket.destroy();
        if (cert) resolve(cert.toString());
        else reject(new Error('no certificate presented'));
      },
    );
    socket.setTimeout(SELF_CHECK_TIMEOUT_MS, () => socket.destroy(new Error('timed out')));
    socket.once('error', reject);
  });
}

/** The ACME directory could not be used; `reason` is the underlying cause (ECONNREFUSED 127.0.0.1:14000, ...). */
class DirectoryUnreachable extends Error {
  constructor(readonly url: string, readonly reason: string) {
    super(`ACME directory ${url} unreachable: ${reason}`);
  }
}

/** A network error as one line: its message, its code when the message lacks it, each address tried. */
function describeFailure(error: Error & { code?: string }): string {
  // Node 20 tries every address of a name (::1, then 127.0.0.1) and reports all in an empty-message AggregateError.
  if (error instanceof AggregateError && error.errors.length > 0) {
    return [...new Set(error.errors.map((e: Error) => describeFailure(e)))].join('; ');
  }
  const message = error.message || error.code || String(error);
  return error.code !== undefined && !message.includes(error.code) ? `${message} (${error.code})` : message;
}

/**
 * Fetches the ACME directory once, without acme-client: its HTTP layer retries a refused
 * connection five times over 75 s and then fails with "Cannot read properties of undefined".
 * Rejects with DirectoryUnreachable naming the real cause.
 */
function checkDirectory(url: string, agent: https.Agent | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (reason: string): void => reject(new DirectoryUnreachable(url, reason));
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      return fail('not a URL');
    }
    const get = target.protocol === 'http:' ? http.get : https.get;
    const req = get(target, { agent: target.protocol === 'https:' ? agent : undefined, timeout: DIRECTORY_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_DIRECTORY_BYTES) req.destroy(new Error(`answer larger than ${MAX_DIRECTORY_BYTES} bytes`));
        else chunks.push(chunk);
      });
      res.on('end', () => {
        if (res.statusCode !== 200) return fail(`HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trim());
        let directory: unknown;
        try {
          directory = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          return fail(`the answer is not JSON (Content-Type: ${res.headers['content-type'] ?? 'none'})`);
        }
        if (typeof (directory as { newAccount?: unknown } | null)?.newAccount !== 'string') {
          return fail('the answer is JSON but not an ACME directory (no newAccount)');
        }
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${DIRECTORY_TIMEOUT_MS / 1000} s`)));
    req.on('error', (error) => fail(describeFailure(error)));
  });
}

export class AcmeCertificates {
  private readonly cache: CertCache | undefined;
  private readonly retry: RetryPolicy;
  /** The agent acme-client uses too, when --acme-ca adds a CA; otherwise Node's default. */
  private readonly agent: https.Agent | undefined;
  private client: acme.Client | undefined;
  private challengeKey: Buffer | undefined;
  private self: SelfAddress | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: AcmeOptions) {
    this.cache = options.cacheDir === undefined ? undefined : new CertCache(options.cacheDir, options.directoryUrl);
    this.retry = options.retry ?? DEFAULT_RETRY;
    if (options.caFile !== undefined) {
      // acme-client talks through one shared axios instance; this process has one CA to trust.
      let extra: string;
      try {
        extra = fs.readFileSync(options.caFile, 'utf8');
      } catch (error) {
        throw new ConfigError('--acme-ca', (error as Error).message);
      }
      this.agent = new https.Agent({ ca: [...tls.rootCertificates, extra] });
      acme.axios.defaults.httpsAgent = this.agent;
    }
    acme.setLogger((message) => options.log.debug({ acme: message }, 'acme-client'));
  }

  /** The name certificates are cached under. */
  private get name(): string {
    return this.options.domains[0]!;
  }

  /** Installs the cached certificate, if there is one that covers every domain. */
  async loadCached(): Promise<void> {
    const { log, domains, serving } = this.options;
    if (!this.cache) return;
    let cached: KeyAndCertificate | undefined;
    try {
      cached = await this.cache.readCertificate(this.name);
    } catch (error) {
      throw new ConfigError('--cache', (error as Error).message);
    }
    if (!cached) return;
    try {
      const { names } = describeCertificate(cached.cert);
      const missing = domains.filter((d) => !names.includes(d));
      if (missing.length > 0) throw new Error(`it does not cover ${missing.join(', ')}`);
      const installed = serving.install(cached);
      log.info({ domains, notAfter: installed.notAfter, fingerprint: installed.fingerprint }, 'using cached certificate');
    } catch (error) {
      log.warn({ err: error, dir: this.cache.dir }, 'ignoring cached certificate');
    }
  }

  /** Orders a certificate now if there is none, and renews each one when it is due. */
  start(self: SelfAddress): void {
    this.self = self;
    this.scheduleRenewal();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private scheduleRenewal(): void {
    const current = this.options.serving.current;
    const due = current ? renewalTime(current.notBefore, current.notAfter) : Date.now();
    this.wakeAt(due, () => void this.obtain(0));
  }

  private wakeAt(time: number, run: () => void): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const delay = Math.max(0, time - Date.now());
    this.timer = setTimeout(() => (delay > MAX_TIMER_MS ? this.wakeAt(time, run) : run()), Math.min(delay, MAX_TIMER_MS));
    this.timer.unref();
  }

  /** One order (or renewal) attempt; on failure schedules the next with doubled delay. Never rejects. */
  private async obtain(attempt: number): Promise<void> {
    const { log, domains, serving } = this.options;
    const renewing = serving.current !== undefined;
    log.info({ domains, directory: this.options.directoryUrl }, renewing ? 'renewing certificate' : 'ordering certificate');
    let pair: KeyAndCertificate;
    try {
      pair = await this.order();
    } catch (error) {
      if (this.stopped) return;
      const delay = Math.min(this.retry.firstMs * 2 ** attempt, this.retry.maxMs);
      const retrying = `retrying in ${delay < 1000 ? `${delay} ms` : `${Math.round(delay / 1000)} s`}`;
      const what = renewing ? 'certificate renewal failed; the current certificate keeps serving' : 'certificate order failed';
      if (error instanceof DirectoryUnreachable) {
        // Most often a typo in --acme-directory or no network yet: a warning the operator can act on.
        log.warn({ directory: error.url, cause: error.reason, domains, attempt: attempt + 1, retryInMs: delay }, `${what}: ${error.message}; ${retrying}`);
      } else {
        log.error({ err: error, domains, attempt: attempt + 1, retryInMs: delay }, `${what}; ${retrying}`);
      }
      this.wakeAt(Date.now() + delay, () => void this.obtain(attempt + 1));
      return;
    }
    if (this.stopped) return;
    const installed = serving.install(pair);
    this.scheduleRenewal();
    // Cache before announcing, so whoever acts on "issued" (a restart, a test) finds the files.
    try {
      await this.cache?.writeCertificate(this.name, pair);
    } catch (error) {
      log.error({ err: error, dir: this.cache!.dir }, 'could not cache the certificate; the next start orders a new one');
    }
    log.info({ domains, notAfter: installed.notAfter, fingerprint: installed.fingerprint }, renewing ? 'certificate renewed' : 'certificate issued');
  }

  private async order(): Promise<KeyAndCertificate> {
    const { domains } = this.options;
    // Every attempt: acme-client reads the directory only once per client, so a renewal would
    // otherwise meet an unreachable CA only through its slow retries.
    await checkDirectory(this.options.directoryUrl, this.agent);
    this.client ??= await this.createClient();
    this.challengeKey ??= await acme.crypto.createPrivateEcdsaKey();
    const [key, csr] = await acme.crypto.createCsr({ commonName: domains[0], altNames: domains }, await acme.crypto.createPrivateEcdsaKey());
    const cert = await this.client.auto({
      csr,
      termsOfServiceAgreed: true,
      challengePriority: ['tls-alpn-01'],
      // acme-client's own pre-check resolves the domain and dials port 443 from here, which fails
      // behind NAT or on another port; selfCheck asks our own listener over loopback instead.
      skipChallengeVerification: true,
      challengeCreateFn: (authz, challenge, keyAuthorization) => this.present(authz, challenge.type, keyAuthorization),
      challengeRemoveFn: async (authz) => this.options.responder.remove(authz.identifier.value),
    });
    return { key: key.toString(), cert };
  }

  private async createClient(): Promise<acme.Client> {
    let accountKey = await this.cache?.readAccountKey();
    if (accountKey === undefined) {
      accountKey = (await acme.crypto.createPrivateEcdsaKey()).toString();
      await this.cache?.writeAccountKey(accountKey);
    }
    // Polling a pending challenge or order: 0.2 s doubling to 5 s (acme-client waits 5-30 s).
    const client = new acme.Client({ directoryUrl: this.options.directoryUrl, accountKey, backoffAttempts: 12, backoffMin: 200, backoffMax: 5_000 });
    await client.createAccount({ termsOfServiceAgreed: true, contact: this.options.emails.map((e) => `mailto:${e}`) });
    return client;
  }

  /** Serves the challenge certificate for one domain and checks that our port really presents it. */
  private async present(authz: acme.Authorization, type: string, keyAuthorization: string): Promise<void> {
    const domain = authz.identifier.value;
    if (type !== 'tls-alpn-01') throw new Error(`${domain}: the CA offers no tls-alpn-01 challenge`);
    const [key, cert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, this.challengeKey);
    this.options.responder.add(domain, { key: key.toString(), cert: cert.toString() });
    const presented = await presentedChallengeCertificate(this.self!, domain);
    if (!acme.crypto.isAlpnCertificateAuthorizationValid(presented, keyAuthorization)) {
      throw new Error(`${domain}: our TLS port presents a different ${ACME_TLS_ALPN} certificate than this challenge needs`);
    }
  }
}
