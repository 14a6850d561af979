{{- /* The gateway's nginx configuration (a template: templates/gateway.yaml renders it with
       tpl; scripts/local runs the same, rendered with its own values). .upstreams maps each
       upstream (command-api, query-api, console) to its host:port; .tmp is a writable
       directory. */ -}}
# mercato's gateway: one address in front of the roles. Each request goes to the role that
# serves it, by method and path (routes.conf, generated from mercato's routes); any other path
# is the console's.
worker_processes auto;
pid {{ .tmp }}/nginx.pid;
error_log /dev/stderr warn;

events {
    worker_connections 4096;
}

http {
    # mercato logs every request itself, with its trace.
    access_log off;
    server_tokens off;
    client_max_body_size {{ .clientMaxBodySize }};
    client_body_temp_path {{ .tmp }}/nginx-client-body;
    proxy_temp_path {{ .tmp }}/nginx-proxy;
    fastcgi_temp_path {{ .tmp }}/nginx-fastcgi;
    uwsgi_temp_path {{ .tmp }}/nginx-uwsgi;
    scgi_temp_path {{ .tmp }}/nginx-scgi;

    # The routing key: HEAD is answered as GET, and the path is the one the client sent,
    # without its query string.
    map $request_method $mercato_method {
        default $request_method;
        HEAD GET;
    }
    map $request_uri $mercato_path {
        "~^(?<path>[^?]*)" $path;
    }
    include {{ .routes }};

    {{- range $name, $address := .upstreams }}

    upstream {{ $name }} {
        server {{ $address }};
        # Idle connections kept for reuse, closed well before mercato closes an idle one (10 s),
        # so that a request is never sent on a connection the other side is closing.
        keepalive 32;
        keepalive_timeout 5s;
    }
    {{- end }}

    server {
        listen {{ .listen }};

        # Each process's metrics are scraped inside the cluster, not through the gateway.
        location = /metrics {
            return 404;
        }

        # The gateway's own liveness, for its probes.
        location = /gateway/health {
            default_type text/plain;
            return 200 "ok\n";
        }

        location / {
            proxy_pass http://$mercato_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 60s;
            # A role that cannot be reached: a problem body telling the client to come back,
            # like mercato's own 503 (nginx retries nothing that is not idempotent).
            proxy_next_upstream error timeout;
            error_page 502 504 = @unavailable;
        }

        location @unavailable {
            default_type application/problem+json;
            add_header Retry-After 1 always;
            return 503 '{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"the part of the shop that answers this request cannot be reached just now: try again in a moment"}';
        }
    }
}
