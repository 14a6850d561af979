#!/usr/bin/env python3
"""Signs a webhook payload as Stripe does, with Stripe's own Python package (`pip install
stripe`), so that mercato's verification is tested against an implementation of its own.

usage: stripe-sign.py SECRET TIMESTAMP < PAYLOAD

Prints the Stripe-Signature header, t=TIMESTAMP,v1=SIGNATURE, after checking it with the
package's own verifier; exits 2 when the package is missing.
"""

import sys


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    secret, timestamp = sys.argv[1], int(sys.argv[2])
    try:
        import stripe
    except ImportError as error:
        print(f"missing library: {error} (pip install stripe)", file=sys.stderr)
        return 2
    payload = sys.stdin.buffer.read().decode("utf-8")
    signature = stripe.WebhookSignature._compute_signature(f"{timestamp}.{payload}", secret)
    header = f"t={timestamp},v1={signature}"
    # The package's verifier takes it (its tolerance is not checked here: old ones are made on
    # purpose).
    stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    print(header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
