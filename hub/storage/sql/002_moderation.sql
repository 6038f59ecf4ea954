-- Moderation (PROTOCOL §8): every action, who took it, when and why, written by the flusher
-- from the outbox like every other record. Deleted and cleared chat messages are marked in
-- chat_messages (deleted_at, deleted_by), never erased.

CREATE TABLE IF NOT EXISTS moderation_actions (
    action_id   CHAR(36)      NOT NULL PRIMARY KEY,
    stream_id   CHAR(36)      NOT NULL,
    action      VARCHAR(32)   NOT NULL,
    by_user     VARCHAR(191)  NOT NULL,
    user_id     VARCHAR(191)  NULL,
    message_id  CHAR(36)      NULL,
    seconds     INT UNSIGNED  NULL,
    reason      VARCHAR(500)  NULL,
    ends_at     DATETIME(3)   NULL,
    created_at  DATETIME(3)   NOT NULL,
    KEY actions_by_stream (stream_id, action, action_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
