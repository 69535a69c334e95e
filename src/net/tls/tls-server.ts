// The HTTPS server of TLS mode and where its certificate comes from: --tls-cert/--tls-key files,
// or ACME for --domains (answering the TLS-ALPN-01 challenge on this same server).

import https from 'node:https';
import type { Config } from '../../config.js';
import type { Logger } from '../../logger.js';
// acme.js (and acme-client with its crypto stack, the largest thing mles could load) is imported
// only when ACME is used: --tls-cert and local mode never hold it.
import type { RetryPolicy, SelfAddress } from './acme.js';
import { AlpnChallengeResponder } from './alpn-responder.js';
import { OwnCertificate } from './own-cert.js';
import { ServingCertificate } from './serving-certificate.js';
import { REQUEST_TIMEOUTS } from '../http/guard.js';

const MIN_TLS_VERSION = 'TLSv1.2';
/** A connection that has not finished its handshake by then is dropped (Node's default: 120 s). */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface TlsServer {
  server: https.Server;
  /** Starts certificate work that needs the listener up (ordering, renewal, reload watches). */
  start(self: SelfAddress): void;
  stop(): void;
}

export async function acmeDirectoryUrl(config: Config): Promise<string> {
  if (config.acmeDirectory !== undefined) return config.acmeDirectory;
  const { LETS_ENCRYPT } = await import('./acme.js');
  return config.staging ? LETS_ENCRYPT.staging : LETS_ENCRYPT.production;
}

/** True when the flags ask for TLS: own certificate files, or domains to get certificates for. */
export function wantsTls(config: Config): boolean {
  return config.tlsCert !== undefined || config.domains.length > 0;
}

export async function createTlsServer(config: Config, log: Logger, acmeRetry?: RetryPolicy): Promise<TlsServer> {
  const useAcme = config.tlsCert === undefined;
  const responder = new AlpnChallengeResponder();
  const server = https.createServer({
    ...REQUEST_TIMEOUTS,
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    minVersion: MIN_TLS_VERSION,
    ...(useAcme ? responder.tlsOptions() : {}),
  });
  // Every handshake but an ACME challenge gets the server's default context, so replacing it
  // changes the certificate for new connections only.
  const serving = new ServingCertificate((pair) => server.setSecureContext({ ...pair, minVersion: MIN_TLS_VERSION }));

  let reportedNoCertificate = false;
  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket) => {
    socket.destroy();
    log.debug({ err: error, remote: socket.remoteAddress }, 'TLS handshake failed');
    // Until the first certificate arrives every handshake fails (a client hanging up is no such
    // failure: the CA's validators do that): say it once, not per client.
    if (serving.current === undefined && error.code?.startsWith('ERR_SSL_') && !reportedNoCertificate) {
      reportedNoCertificate = true;
      log.warn('TLS handshakes fail until the first certificate is issued');
    }
  });

  if (!useAcme) {
    const own = new OwnCertificate(config.tlsCert!, config.tlsKey!, serving, log);
    own.load();
    return { server, start: () => own.watch(), stop: () => own.stop() };
  }

  if (config.cache === undefined) {
    log.warn("no --cache: every start orders new certificates, and Let's Encrypt limits how many you may get");
  }
  const { AcmeCertificates } = await import('./acme.js');
  const acme = new AcmeCertificates({
    domains: config.domains,
    emails: config.emails,
    directoryUrl: await acmeDirectoryUrl(config),
    caFile: config.acmeCa,
    cacheDir: config.cache,
    serving,
    responder,
    log,
    ...(acmeRetry ? { retry: acmeRetry } : {}),
  });
  await acme.loadCached();
  return { server, start: (self) => acme.start(self), stop: () => acme.stop() };
}
