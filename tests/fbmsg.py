"""The FB operator's own text inside an MXNetError (shared by tests/test_ops.py and the fuzz).

Errors raised by the compiled operator reach Python as MXNet's "Error calling InferShape for custom
operator ..." followed by lib_api's "Extension Traceback", one ``[i] file[line]: text`` line per
message the library holds; errors raised by the Python wrappers are the text itself."""
import re

_EXT_LINE = re.compile(r"^\s*\[\d+\] [^\s\[\]]+\[\d+\]: (.*)$", re.M)


def op_messages(err):
    """The operator's messages in ``err`` (an exception or its text), oldest first."""
    text = str(err)
    if "Extension Traceback:" in text:
        return _EXT_LINE.findall(text.split("Extension Traceback:", 1)[1])
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return [line] if line else []


def op_message(err):
    """The single operator message of ``err``; AssertionError when there are none or several
    (several would be stale messages of earlier calls)."""
    msgs = op_messages(err)
    assert len(msgs) == 1, "expected exactly one operator message, got %d:\n%s" % (len(msgs), err)
    return msgs[0]
