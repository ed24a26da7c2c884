"""The typed error of a request the explanation methods cannot answer (an unknown method, a head or layer
the model lacks); its message is meant for the person or API client that sent it (vit.app turns it into
a gr.Error in one place, in the visitor's language by its code: vit.messages)."""
from vit.messages import Said


class RequestError(Said, ValueError):
    """A request that names a method, head or layer the model does not have (its code: "request.*")."""
