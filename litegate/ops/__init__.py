"""Operations kit: scrape-time gauges, and the Grafana dashboard, Prometheus alert rules
and scrape example shipped as package data (``litegate ops export DIR``)."""
