// The certificate the TLS listener presents right now. Replacing it affects only handshakes that
// start afterwards: open connections keep the certificate they were made with.

import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';

export interface KeyAndCertificate {
  /** PEM private key. */
  key: string;
  /** PEM certificate followed by its chain. */
  cert: string;
}

export interface CertificateInfo {
  notBefore: Date;
  notAfter: Date;
  /** Names the certificate is valid for (its DNS subject alternative names). */
  names: string[];
  /** SHA-256 fingerprint, for logs. */
  fingerprint: string;
}

export interface Installed extends KeyAndCertificate, CertificateInfo {
  context: tls.SecureContext;
}

/** Reads what the first certificate of a PEM chain covers; throws if it is no certificate. */
export function describeCertificate(certPem: string): CertificateInfo {
  const leaf = new X509Certificate(certPem);
  const names = (leaf.subjectAltName ?? '')
    .split(', ')
    .filter((entry) => entry.startsWith('DNS:'))
    .map((entry) => entry.slice(4).toLowerCase());
  return { notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo), names, fingerprint: leaf.fingerprint256 };
}

export class ServingCertificate {
  private installed: Installed | undefined;

  /** `onChange` runs after each install, e.g. to update the server's default (no-SNI) context. */
  constructor(private readonly onChange: (pair: KeyAndCertificate) => void = () => {}) {}

  get current(): Installed | undefined {
    return this.installed;
  }

  /** Validates and installs a key and certificate; throws (keeping the old one) if they do not fit together. */
  install(pair: KeyAndCertificate): Installed {
    const context = tls.createSecureContext({ key: pair.key, cert: pair.cert });
    this.installed = { ...pair, context, ...describeCertificate(pair.cert) };
    this.onChange(pair);
    return this.installed;
  }
}
