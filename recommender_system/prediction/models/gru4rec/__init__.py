"""GRU4Rec: a session-based recurrent network (Hidasi et al., arXiv 1511.06939 and 1706.03847)."""

from recommender_system.prediction.models.gru4rec.model import Gru4recModel

__all__ = ["Gru4recModel"]
