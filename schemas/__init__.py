"""payrail's message contracts: events, commands, topics and money on the wire."""

from schemas.catalog import (
    COMMAND_TYPES,
    EVENT_TYPES,
    MESSAGE_TYPES,
    UndecodableMessage,
    decode,
    decode_object,
    decode_typed,
    encode,
    message_type_name,
    new_command,
    new_event,
    parse_body,
)
from schemas.envelope import Command, Event, Message
from schemas.topics import Topic, topic_name

__all__ = [
    "COMMAND_TYPES",
    "EVENT_TYPES",
    "MESSAGE_TYPES",
    "Command",
    "Event",
    "Message",
    "Topic",
    "UndecodableMessage",
    "decode",
    "decode_object",
    "decode_typed",
    "encode",
    "message_type_name",
    "new_command",
    "new_event",
    "parse_body",
    "topic_name",
]
