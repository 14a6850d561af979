#!/usr/bin/env python3
"""Verifies a mercato access token with two independent JOSE libraries (PyJWT and jwcrypto)
against the JWKS the server publishes, the way a client or another service would.

usage: verify-jwt.py JWKS_URL TOKEN

Prints one JSON object per library with the claims it verified, then exits 0; exits 1 (printing
why) when either library refuses the token, 2 when a library is missing.
"""

import json
import sys
import urllib.request


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    jwks_url, token = sys.argv[1], sys.argv[2]
    try:
        import jwt as pyjwt
        from jwcrypto import jwk, jwt as jwcrypto_jwt
    except ImportError as error:
        print(f"missing library: {error} (pip install 'PyJWT[crypto]' jwcrypto)", file=sys.stderr)
        return 2
    with urllib.request.urlopen(jwks_url, timeout=10) as answer:
        jwks = answer.read().decode()

    # PyJWT: the key chosen by the token's kid from the JWKS; the algorithm pinned.
    try:
        client = pyjwt.PyJWKClient(jwks_url)
        key = client.get_signing_key_from_jwt(token)
        claims = pyjwt.decode(
            token,
            key.key,
            algorithms=["EdDSA"],
            audience="mercato",
            issuer="mercato",
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
        print(json.dumps({"library": "PyJWT", "claims": claims}))
    except Exception as error:  # noqa: BLE001 - any refusal is the answer
        print(f"PyJWT refused the token: {type(error).__name__}: {error}", file=sys.stderr)
        return 1

    # jwcrypto: the whole key set; the algorithm pinned; expiry and claims checked.
    try:
        keys = jwk.JWKSet.from_json(jwks)
        verified = jwcrypto_jwt.JWT(
            jwt=token,
            key=keys,
            algs=["EdDSA"],
            check_claims={"iss": "mercato", "aud": "mercato", "exp": None},
        )
        print(json.dumps({"library": "jwcrypto", "claims": json.loads(verified.claims)}))
    except Exception as error:  # noqa: BLE001
        print(f"jwcrypto refused the token: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
