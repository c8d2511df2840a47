// A self-signed certificate for the coordinator of a netsim run (it is its own CA: workers
// trust it with --ca), valid for the given IP addresses, written as PEM files.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generate as selfSigned } from 'selfsigned';

export interface CertFiles {
  readonly cert: string;
  readonly key: string;
  /** What workers pass to --ca (the certificate itself). */
  readonly ca: string;
}

export async function writeSelfSignedCert(dir: string, name: string, ips: readonly string[]): Promise<CertFiles> {
  const pems = await selfSigned([{ name: 'commonName', value: name }], {
    keyType: 'ec', curve: 'P-256', algorithm: 'sha256', notAfterDate: new Date(Date.now() + 86_400_000),
    extensions: [{ name: 'subjectAltName', altNames: ips.map((ip) => ({ type: 7 as const, ip })) }],
  });
  const files = { cert: join(dir, `${name}-cert.pem`), key: join(dir, `${name}-key.pem`), ca: join(dir, `${name}-ca.pem`) };
  await writeFile(files.cert, pems.cert);
  await writeFile(files.key, pems.private, { mode: 0o600 });
  await writeFile(files.ca, pems.cert);
  return files;
}
