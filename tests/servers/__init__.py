"""Fake model servers on 127.0.0.1 that speak Ollama's and OpenAI's HTTP APIs."""
