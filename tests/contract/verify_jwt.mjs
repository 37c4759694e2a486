// tests/contract/verify_jwt.mjs: verifies Tessera access tokens with the `jose` package, an
// implementation independent of Tessera's own (RFC 9068 §4's validation by a resource server).
//
// stdin: one JSON job
//   { "jwks_url": "http://127.0.0.1:PORT/t/SLUG/jwks.json",
//     "issuer": "<TESSERA_PUBLIC_URL>/t/SLUG", "audience": "<same>",
//     "tokens": ["eyJ...", ...],
//     "typ": "JWT" }            (optional: the header typ required; default "at+jwt", an access
//                               token; tests/integration/test_authorize.py checks ID tokens with "JWT")
// stdout: one JSON object
//   { "jwks": <the JWKS document as fetched>,
//     "results": [ { "ok": true, "header": {...}, "payload": {...} }
//                | { "ok": false, "code": "ERR_JWS_...", "error": "..." }, ... ] }
// Exit 0 when the job ran (whatever the verdicts), 2 when it could not run at all.
import { createRemoteJWKSet, jwtVerify } from 'jose';

async function readStdin() {
    const chunks = [];
    for await (const chunk of process.stdin)
        chunks.push(chunk);
    return Buffer.concat(chunks).toString('utf8');
}

async function verifyOne(token, keys, job) {
    try {
        // typ "at+jwt" is required (RFC 9068 §2.1, §4) unless the job names another; jose
        // compares it as a media type.
        const { payload, protectedHeader } = await jwtVerify(token, keys, {
            issuer: job.issuer,
            audience: job.audience,
            typ: job.typ || 'at+jwt',
            algorithms: job.algorithms,
        });
        return { ok: true, header: protectedHeader, payload };
    } catch (err) {
        return { ok: false, code: err.code || err.name, error: String(err.message || err) };
    }
}

async function main() {
    const job = JSON.parse(await readStdin());
    const url = new URL(job.jwks_url);
    const keys = createRemoteJWKSet(url, { cooldownDuration: 0, timeoutDuration: 10000 });
    const results = [];
    for (const token of job.tokens)
        results.push(await verifyOne(token, keys, job));
    const jwks = await (await fetch(url)).json();
    process.stdout.write(JSON.stringify({ jwks, results }) + '\n');
}

main().catch((err) => {
    process.stderr.write(`verify_jwt.mjs: ${err.stack || err}\n`);
    process.exit(2);
});
