#!/usr/bin/env python3
"""A smoke test of a running scaled-out mercato through its gateway (scripts/local test).

Each step goes through the one address a client uses, so each checks that the gateway sends the
request to the role that serves it and that the roles reach each other: a product written
(command-api) and read back at its position (query-api, fed by Kafka through the relay and the
projector), searched, shown by the console's pages, then a guest's cart checked out (command-api)
and confirmed by the saga (over Kafka). Prints one line per step; exits 1 at the first failure.

Usage: local-smoke.py BASE_URL ADMIN_API_KEY
"""

import json
import sys
import time
import urllib.error
import urllib.request
import uuid

BASE, ADMIN = sys.argv[1].rstrip("/"), sys.argv[2].strip()


def call(method, path, body=None, headers=None, expect=(200,)):
    request = urllib.request.Request(
        BASE + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            status, text, answer_headers = answer.status, answer.read().decode(), answer.headers
    except urllib.error.HTTPError as error:
        status, text, answer_headers = error.code, error.read().decode(), error.headers
    if status not in expect:
        sys.exit(f"FAIL {method} {path}: {status} {text[:500]}")
    kind = answer_headers.get("content-type", "")
    return json.loads(text) if "json" in kind and text else text


def step(name):
    print(f"ok   {name}", flush=True)


admin = {"authorization": f"Bearer {ADMIN}"}
call("GET", "/ready")
step("GET /ready through the gateway")

name = f"Smoke test kettle {uuid.uuid4().hex[:8]}"
created = call(
    "POST",
    "/products",
    {"name": name, "description": "Stovetop, 1.5 l", "price": 29.9, "stock_qty": 5, "category": "Kitchen"},
    admin,
    expect=(201,),
)
product_id, position = created["product_id"], created["position"]
step(f"POST /products (command-api): {product_id} at position {position}")

product = call("GET", f"/products/{product_id}", headers={"x-min-position": str(position)})
assert product["name"] == name and product["stock_qty"] == 5, product
step("GET /products/{id} at that position (query-api, through the relay, Kafka and the projector)")

for _ in range(50):
    hits = call("GET", "/search?q=kettle&limit=50")["hits"]
    if any(hit["product_id"] == product_id for hit in hits):
        break
    time.sleep(0.2)
else:
    sys.exit(f"FAIL GET /search: {product_id} not found")
step("GET /search finds it (query-api)")

page = call("GET", f"/shop/products/{product_id}")
assert name in page, "the product page does not show the product's name"
step("GET /shop/products/{id} (console, calling the API through the gateway)")

cart = str(uuid.uuid4())
added = call("POST", f"/carts/{cart}/items", {"product_id": product_id, "quantity": 2})
token = {"x-cart-token": added["cart_token"]}
step("POST /carts/{id}/items as a guest (command-api)")

placed = call("POST", f"/carts/{cart}/checkout", {"payment_token": "tok_visa"}, token, expect=(202,))
order_id = placed["order_id"]
order_token = {"x-order-token": placed["order_token"]}
step(f"POST /carts/{{id}}/checkout: order {order_id}")

deadline = time.time() + 30
while True:
    order = call("GET", f"/orders/{order_id}", headers=order_token, expect=(200, 404))
    if isinstance(order, dict) and order.get("status") == "CONFIRMED":
        break
    if isinstance(order, dict) and order.get("status") == "CANCELLED":
        sys.exit(f"FAIL the order was cancelled: {order}")
    if time.time() > deadline:
        sys.exit(f"FAIL the order is not CONFIRMED after 30 s: {order}")
    time.sleep(0.2)
step("GET /orders/{id}: CONFIRMED (the saga took the payment)")

deadline = time.time() + 10
while call("GET", f"/products/{product_id}")["stock_qty"] != 3:
    if time.time() > deadline:
        sys.exit("FAIL the product's stock did not go from 5 to 3 within 10 s")
    time.sleep(0.2)
step("GET /products/{id}: 3 left of 5")

call("GET", "/metrics", expect=(404,))
step("GET /metrics is not served through the gateway")
print("local smoke test: all steps passed")
