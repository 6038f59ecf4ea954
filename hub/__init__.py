"""The streaming hub: realtime chat, tips and viewer counts for live trading streams."""
