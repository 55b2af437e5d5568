"""The GRU4Rec network (Hidasi et al., arXiv 1511.06939 and 1706.03847): item input, a GRU layer, item output.

Input modes:
- *constrained* (the authors' best setting): an item's input vector is its output embedding, so one item table
  serves input and output and the GRU input size equals the hidden size;
- *embedding*: a separate input embedding table of ``embedding_size`` columns;
- *one-hot*: no embedding; a one-hot input times the GRU input weights is one row of an ``n_items x 3*hidden``
  table, so the row is looked up and no one-hot tensor is ever built.

The GRU step is the standard one (PyTorch's gate order r, z, n): ``r = sigmoid(Wr x + Ur h)``,
``z = sigmoid(Wz x + Uz h)``, ``n = tanh(Wn x + r * (Un h))``, ``h' = (1 - z) * n + z * h``. An item's score is
``h' . item_weight[item] + item_bias[item]``.

Sampled training scores a few thousand items per step, not the catalogue: the training loop gathers the rows of
the items a step uses (``gather_rows``), runs ``step_embedded`` and ``scores`` on them and updates those rows only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import expit
from torch import nn


def _glorot_uniform(tensor: torch.Tensor, fan_in: int, fan_out: int, generator: torch.Generator | None) -> None:
    bound = math.sqrt(6.0 / float(fan_in + fan_out))
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


def dropout(values: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (a uniform draw per entry is several times faster than ``bernoulli_`` on CPUs)."""
    if not training or p <= 0:
        return values
    keep = torch.rand_like(values).ge_(p).mul_(1.0 / (1.0 - p))
    return values * keep


class Gru4recNetwork(nn.Module):
    """Item input -> GRU layer -> dot product with item output embeddings plus an item bias."""

    def __init__(
        self,
        n_items: int,
        hidden_size: int = 100,
        embedding_size: int = 0,
        constrained_embedding: bool = True,
        dropout_p_embed: float = 0.0,
        dropout_p_hidden: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if n_items < 1 or hidden_size < 1:
            raise ValueError("n_items and hidden_size must be positive")
        self.n_items = n_items
        self.hidden_size = hidden_size
        self.constrained_embedding = constrained_embedding
        self.embedding_size = 0 if constrained_embedding else max(0, int(embedding_size))
        self.one_hot = not constrained_embedding and self.embedding_size == 0
        gates = 3 * hidden_size
        self.item_weight = nn.Parameter(torch.empty(n_items, hidden_size))
        self.item_bias = nn.Parameter(torch.zeros(n_items, 1))
        self.input_gates: nn.Parameter | None = None
        self.input_embedding: nn.Parameter | None = None
        self.weight_ih: nn.Parameter | None = None
        if self.one_hot:
            self.input_gates = nn.Parameter(torch.empty(n_items, gates))
        else:
            if not constrained_embedding:
                self.input_embedding = nn.Parameter(torch.empty(n_items, self.embedding_size))
            input_size = hidden_size if constrained_embedding else self.embedding_size
            self.weight_ih = nn.Parameter(torch.empty(input_size, gates))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, gates))
        self.bias_ih = nn.Parameter(torch.zeros(gates))
        self.bias_hh = nn.Parameter(torch.zeros(gates))
        self.dropout_p_embed = float(dropout_p_embed)
        self.dropout_p_hidden = float(dropout_p_hidden)
        self.reset_parameters(seed)

    # --- parameters ---------------------------------------------------------------------------------
    @property
    def input_table(self) -> str:
        """Name of the item table that holds the input representation."""
        if self.one_hot:
            return "input_gates"
        return "item_weight" if self.constrained_embedding else "input_embedding"

    @property
    def output_tables(self) -> tuple[str, str]:
        return ("item_weight", "item_bias")

    @property
    def item_table_names(self) -> tuple[str, ...]:
        """Parameters indexed by item: updated row by row in training."""
        names = self.output_tables
        return names if self.input_table in names else (*names, self.input_table)

    def reset_parameters(self, seed: int | None = None) -> None:
        """Uniform Glorot initialisation, per gate block for the GRU weights; biases start at zero."""
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        h = self.hidden_size
        _glorot_uniform(self.item_weight, self.n_items, h, generator)
        nn.init.zeros_(self.item_bias)
        if self.input_embedding is not None:
            _glorot_uniform(self.input_embedding, self.n_items, self.embedding_size, generator)
        matrices: list[tuple[nn.Parameter, int]] = [(self.weight_hh, h)]
        if self.input_gates is not None:
            matrices.append((self.input_gates, self.n_items))
        if self.weight_ih is not None:
            matrices.append((self.weight_ih, self.weight_ih.shape[0]))
        for matrix, fan_in in matrices:
            for gate in range(3):
                _glorot_uniform(matrix.data[:, gate * h : (gate + 1) * h], fan_in, h, generator)
        nn.init.zeros_(self.bias_ih)
        nn.init.zeros_(self.bias_hh)

    def gather_rows(self, table: str, items: torch.Tensor) -> torch.Tensor:
        """A copy of some rows of an item table that collects their gradient (a leaf tensor)."""
        return getattr(self, table).detach().index_select(0, items).requires_grad_()

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden_size)

    # --- computation --------------------------------------------------------------------------------
    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """The input representation of items (a row of the input table each)."""
        return getattr(self, self.input_table).index_select(0, items)

    def step_embedded(self, embedded: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """One GRU step from input representations (B x E, or B x 3H one-hot rows) and hidden states (B x H);
        dropout on the input and on the new hidden state in training mode."""
        h = self.hidden_size
        if self.one_hot:
            # dropping a one-hot input unit drops its whole row of input weights
            row_keep = dropout(embedded.new_ones(embedded.shape[0], 1), self.dropout_p_embed, self.training)
            input_gates = embedded * row_keep + self.bias_ih
        else:
            assert self.weight_ih is not None
            input_gates = torch.addmm(
                self.bias_ih, dropout(embedded, self.dropout_p_embed, self.training), self.weight_ih
            )
        hidden_gates = torch.addmm(self.bias_hh, hidden, self.weight_hh)
        reset, update = torch.sigmoid(input_gates[:, : 2 * h] + hidden_gates[:, : 2 * h]).chunk(2, dim=1)
        candidate = torch.tanh(torch.addcmul(input_gates[:, 2 * h :], reset, hidden_gates[:, 2 * h :]))
        return dropout(torch.lerp(candidate, hidden, update), self.dropout_p_hidden, self.training)

    def step(self, items: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """One GRU step for a batch of input items (int64, B) and hidden states (B x H)."""
        return self.step_embedded(self.embed(items), hidden)

    @staticmethod
    def scores(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Scores (B x N) of the items whose output rows are ``weight`` (N x H) and ``bias`` (N x 1)."""
        return torch.addmm(bias.T, hidden, weight.T)

    def score_all(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item (B x n_items)."""
        return self.scores(hidden, self.item_weight, self.item_bias)

    def forward(self, items: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New hidden states and the scores of every item."""
        new_hidden = self.step(items, hidden)
        return new_hidden, self.score_all(new_hidden)

    @torch.no_grad()
    def session_state(self, items: torch.Tensor) -> torch.Tensor:
        """The hidden state (H,) after the GRU has read one session's items (oldest first) from zero."""
        hidden = self.init_hidden(1)
        for item in items.view(-1, 1):
            hidden = self.step(item, hidden)
        return hidden[0]


class SessionScorer:
    """A NumPy copy of a trained network for serving one session at a time.

    A request runs the GRU over a handful of items at batch size 1, where torch's per-operation overhead and
    the BLAS thread pools cost more than the arithmetic. This does the computation of ``Gru4recNetwork.step`` (eval
    mode) and ``scores`` with NumPy element-wise loops (``einsum`` without BLAS): one thread, whatever the
    process's torch or BLAS thread settings.
    """

    def __init__(self, network: Gru4recNetwork) -> None:
        def array(tensor: torch.Tensor | None) -> np.ndarray:
            assert tensor is not None
            return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)

        self.hidden_size = network.hidden_size
        self.one_hot = network.one_hot
        self.input_table = array(getattr(network, network.input_table))
        self.weight_ih = None if network.one_hot else array(network.weight_ih)
        self.weight_hh = array(network.weight_hh)
        self.bias_ih = array(network.bias_ih)
        self.bias_hh = array(network.bias_hh)
        self.item_weight = array(network.item_weight)
        self.item_bias = array(network.item_bias)[:, 0]

    def session_state(self, items: np.ndarray) -> np.ndarray:
        """The hidden state (H,) after reading the items (oldest first) from a zero state."""
        h = self.hidden_size
        embedded = self.input_table[np.asarray(items, dtype=np.int64)]
        if self.weight_ih is not None:
            embedded = np.einsum("li,ij->lj", embedded, self.weight_ih)
        input_gates = embedded + self.bias_ih
        hidden = np.zeros(h, dtype=np.float32)
        for gates in input_gates:
            hidden_gates = np.einsum("i,ij->j", hidden, self.weight_hh) + self.bias_hh
            reset = expit(gates[:h] + hidden_gates[:h])
            update = expit(gates[h : 2 * h] + hidden_gates[h : 2 * h])
            candidate = np.tanh(gates[2 * h :] + reset * hidden_gates[2 * h :])
            hidden = candidate + update * (hidden - candidate)
        return hidden

    def scores(self, hidden: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of some items; a row-wise product and sum, so an item's score does not depend on the others."""
        return (self.item_weight[items] * hidden).sum(axis=1) + self.item_bias[items]
