// TLS-ALPN-01 (RFC 8737) on our own TLS port: the CA connects with SNI = the domain and ALPN
// "acme-tls/1" and expects a self-signed certificate that carries the key authorization. Every
// other handshake gets the server's default context (the serving certificate) and http/1.1.

import tls from 'node:tls';
import type { KeyAndCertificate } from './serving-certificate.js';

export const ACME_TLS_ALPN = 'acme-tls/1';
const HTTP_ALPN = 'http/1.1';

export class AlpnChallengeResponder {
  private readonly challenges = new Map<string, tls.SecureContext>();
  // Sockets whose client asked for acme-tls/1. Under TLS 1.3 the ALPN callback runs before the
  // SNI callback, so the mark is there when the certificate is picked. (Under TLS 1.2 the order
  // is reversed; validators use TLS 1.3, which RFC 8737 allows them to require.)
  private readonly challengeSockets = new WeakSet<tls.TLSSocket>();

  /** Serves `pair` to acme-tls/1 handshakes for `domain` until `remove`. */
  add(domain: string, pair: KeyAndCertificate): void {
    this.challenges.set(domain.toLowerCase(), tls.createSecureContext({ key: pair.key, cert: pair.cert }));
  }

  remove(domain: string): void {
    this.challenges.delete(domain.toLowerCase());
  }

  /** Server options. With an ALPNCallback Node refuses ALPNProtocols, so http/1.1 is chosen here too. */
  tlsOptions(): Pick<tls.TlsOptions, 'ALPNCallback' | 'SNICallback'> {
    const responder = this;
    return {
      ALPNCallback(this: tls.TLSSocket, { protocols }: { servername: string; protocols: string[] }) {
        if (protocols.includes(ACME_TLS_ALPN)) {
          responder.challengeSockets.add(this);
          return ACME_TLS_ALPN;
        }
        // Undefined refuses the handshake: we speak nothing else.
        return protocols.includes(HTTP_ALPN) ? HTTP_ALPN : undefined;
      },
      SNICallback(this: tls.TLSSocket, servername: string, done: (err: Error | null, ctx?: tls.SecureContext) => void) {
        if (!responder.challengeSockets.has(this)) return done(null);
        const challenge = responder.challenges.get(servername.toLowerCase());
        if (challenge) done(null, challenge);
        else done(new Error(`no ${ACME_TLS_ALPN} challenge pending for ${servername}`));
      },
    };
  }
}
