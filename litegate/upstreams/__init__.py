"""Remote upstreams: the pooled HTTP/1.1 client, circuit breakers, retries."""
