"""echostat status side: the dashboard, JSON API and health endpoints."""
