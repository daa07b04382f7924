"""The top-N anchor assignment of NoisyAnchor (official ``MatcherTopN``,
detectron2/modeling/matcher.py of henrylee2570/NoisyAnchor)."""

import torch


class TopNMatcher:
    """Each GT's ``top_n`` anchors of highest IoU are positive (all anchors where there are
    fewer); every other anchor is negative, none is ignored. A positive is matched to its
    highest-IoU GT, which need not be the GT whose top N it is in.

    Returns, for a (G, R) IoU matrix: ``matches`` (R,) the highest-IoU GT of every anchor,
    ``labels`` (R,) int8, 1 positive / 0 negative, and ``topn`` (G x min(N, R),) the selected
    anchors GT by GT, duplicates kept (an anchor in two GTs' top N appears twice), ascending
    IoU within a GT; ``None`` without GT. Ties are ordered by ``torch.argsort``, as the
    official."""

    def __init__(self, top_n=30):
        self.top_n = top_n

    def __call__(self, match_quality_matrix):
        assert match_quality_matrix.dim() == 2
        num_anchors = match_quality_matrix.shape[1]
        if match_quality_matrix.numel() == 0:
            return (match_quality_matrix.new_zeros(num_anchors, dtype=torch.int64),
                    match_quality_matrix.new_zeros(num_anchors, dtype=torch.int8), None)
        topn = match_quality_matrix.argsort(dim=1)[:, -self.top_n:].reshape(-1)
        matches = match_quality_matrix.argmax(dim=0)
        labels = matches.new_zeros(num_anchors, dtype=torch.int8)
        labels[topn] = 1
        return matches, labels, topn
