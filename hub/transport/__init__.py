"""The edge: Socket.IO and HTTP in, frames out. Parses what clients send and calls the domain."""
