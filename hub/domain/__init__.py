"""What the hub does: streams, chat, tips, moderation and presence, whatever the transport."""
