-- The durable store. Every table is written by the flusher from the Redis outbox with
-- INSERT ... ON DUPLICATE KEY UPDATE keyed by the record's UUID, so a replayed batch
-- changes nothing. No foreign keys: a batch may carry a stream's messages before the
-- stream row itself, and each record stands on its own.

CREATE TABLE IF NOT EXISTS streams (
    stream_id           CHAR(36)       NOT NULL PRIMARY KEY,
    streamer_id         VARCHAR(191)   NOT NULL,
    streamer_name       VARCHAR(191)   NULL,
    title               VARCHAR(200)   NOT NULL,
    description         TEXT           NULL,
    thumbnail_url       VARCHAR(2048)  NULL,
    status              ENUM('LIVE', 'ENDED', 'SCHEDULED') NOT NULL,
    category            VARCHAR(64)    NOT NULL DEFAULT '',
    is_recording        BOOLEAN        NOT NULL DEFAULT FALSE,
    recording_url       VARCHAR(2048)  NULL,
    peak_viewers        INT UNSIGNED   NOT NULL DEFAULT 0,
    unique_viewers      INT UNSIGNED   NOT NULL DEFAULT 0,
    message_count       INT UNSIGNED   NOT NULL DEFAULT 0,
    tip_count           INT UNSIGNED   NOT NULL DEFAULT 0,
    tips_total          DECIMAL(12,2)  NOT NULL DEFAULT 0.00,
    platform_fees_total DECIMAL(12,2)  NOT NULL DEFAULT 0.00,
    scheduled_at        DATETIME(3)    NULL,
    started_at          DATETIME(3)    NULL,
    ended_at            DATETIME(3)    NULL,
    duration_seconds    INT UNSIGNED   NULL,
    created_at          DATETIME(3)    NOT NULL,
    updated_at          DATETIME(3)    NOT NULL,
    version             BIGINT UNSIGNED NOT NULL DEFAULT 0,
    KEY streams_by_streamer (streamer_id, created_at),
    KEY streams_by_status (status, category)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS chat_messages (
    message_id    CHAR(36)      NOT NULL PRIMARY KEY,
    stream_id     CHAR(36)      NOT NULL,
    user_id       VARCHAR(191)  NOT NULL,
    username      VARCHAR(191)  NULL,
    message       VARCHAR(500)  NOT NULL,
    message_type  ENUM('TEXT', 'EMOJI', 'TIP', 'ALERT') NOT NULL,
    tip_amount    DECIMAL(12,2) NULL,
    alert         JSON          NULL,
    created_at    DATETIME(3)   NOT NULL,
    deleted_at    DATETIME(3)   NULL,
    deleted_by    VARCHAR(191)  NULL,
    KEY messages_by_stream (stream_id, message_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS tips (
    tip_id         CHAR(36)      NOT NULL PRIMARY KEY,
    stream_id      CHAR(36)      NOT NULL,
    from_user_id   VARCHAR(191)  NOT NULL,
    to_user_id     VARCHAR(191)  NOT NULL,
    amount         DECIMAL(12,2) NOT NULL,
    platform_fee   DECIMAL(12,2) NOT NULL,
    streamer_share DECIMAL(12,2) NOT NULL,
    currency       CHAR(3)       NOT NULL,
    message        VARCHAR(500)  NOT NULL DEFAULT '',
    client_tip_id  VARCHAR(64)   NULL,
    created_at     DATETIME(3)   NOT NULL,
    KEY tips_by_stream (stream_id, created_at),
    KEY tips_by_sender (from_user_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS viewing_sessions (
    session_id    CHAR(36)      NOT NULL PRIMARY KEY,
    stream_id     CHAR(36)      NOT NULL,
    user_id       VARCHAR(191)  NULL,
    joined_at     DATETIME(3)   NOT NULL,
    left_at       DATETIME(3)   NOT NULL,
    watch_seconds INT UNSIGNED  NOT NULL,
    KEY sessions_by_stream (stream_id, joined_at),
    KEY sessions_by_user (user_id, joined_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
