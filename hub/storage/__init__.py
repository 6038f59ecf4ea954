"""Where state lives: live state in Redis (keys, Lua scripts) and history in MySQL."""
