"""Remote upstreams: pooled aiohttp client, circuit breakers, retries."""
