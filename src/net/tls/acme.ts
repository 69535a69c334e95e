// Certificates from any RFC 8555 CA (Let's Encrypt by default) over the TLS-ALPN-01 challenge,
// answered on our own TLS port. Orders and renewals run in the background; a failure is retried
// with backoff while the current certificate (if any) keeps serving.

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

export class AcmeCertificates {
  private readonly cache: CertCache | undefined;
  private readonly retry: RetryPolicy;
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
      acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...tls.rootCertificates, extra] });
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
      const what = renewing ? 'certificate renewal failed; the current certificate keeps serving' : 'certificate order failed';
      log.error({ err: error, domains, attempt: attempt + 1, retryInMs: delay }, `${what}; retrying in ${delay < 1000 ? `${delay} ms` : `${Math.round(delay / 1000)} s`}`);
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
