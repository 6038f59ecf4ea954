"""The wire format module: what it writes, a room channel's messages read back."""

from hub import frames


def test_an_event_is_an_engineio_text_on_the_namespace():
    assert frames.event("chat_message", b'{"a":1}') == b'42/streaming,["chat_message",{"a":1}]'


def test_room_messages_read_back_in_order_with_runs_merged():
    one, two, three = (frames.event("e", str(i).encode()) for i in range(3))
    items = [
        frames.room_message(one),
        frames.room_message(two),
        frames.room_message(three, skip="sid-1"),
        frames.CLOSE,
        frames.room_message(one, two),
        frames.ban("u|1", "spam"),
    ]
    assert list(frames.read_room_messages(items)) == [
        frames.Events(None, [one, two]),
        frames.Events("sid-1", [three]),
        frames.Order("close"),
        frames.Events(None, [one, two]),
        frames.Order("ban", "u|1", "spam"),
    ]


def test_an_around_is_filled_by_concatenation():
    hole = frames.around("moderators_changed", b'{"moderators":', b"}")
    filled = hole.head + b'["a"]' + hole.tail
    assert filled == frames.room_message(frames.event("moderators_changed", b'{"moderators":["a"]}'))


def test_heads_of_client_packets():
    assert frames.read_head('2/streaming,17["send_message",{}]') == frames.Head(
        "2", "/streaming", 17, "send_message"
    )
    assert frames.read_head("0/streaming,{}") == frames.Head("0", "/streaming", None, None)
    assert frames.read_head('21["x"]') == frames.Head("2", "/", 1, "x")
    assert frames.read_head("garbage") is None


def test_the_lua_prelude_writes_the_same_frames():
    import redis

    client = redis.Redis()
    try:
        text = client.eval(
            "local PUBLISH = 'PUBLISH'\n" + frames.lua_prelude() + "return frame('viewer_left', 7)", 0
        )
    finally:
        client.close()
    assert text == frames.event("viewer_left", b"7")
