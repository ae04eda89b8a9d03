"""Loading weights into a built network by parameter name."""
import os

__all__ = ["load_pretrained"]


def load_pretrained(net, path, model_name=None):
    """Load this project's ``.params`` file at ``path`` into the Gluon block ``net`` (by name)."""
    if not os.path.isfile(path):
        raise FileNotFoundError("pretrained weights %s do not exist" % path)
    try:
        net.load_parameters(path, ignore_extra=False, allow_missing=False)
    except AssertionError as e:  # Gluon reports missing/extra names with assertions
        raise ValueError("%s does not match %s by parameter name: %s" % (path, model_name or type(net).__name__,
                                                                      str(e).split("\n")[0]))
    return net
