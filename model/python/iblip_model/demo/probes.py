"""Training-only auxiliary heads of the demo model (never exported) and the
scene labels they learn from.

From the answers' gradient alone, which must first pass the LM and the
Q-Former, a model this small learns what is where slowly: balanced presence
questions once stayed at chance for 2,100 steps. These heads supervise each
stage directly, so the soft prompt the LM reads carries the answers in fixed
places:
  - every ViT patch: the kind and color of the shape covering it, and the
    patch's own place (which keeps positions readable);
  - Q-Former queries 0-3, one per shape kind in caption order: that shape's
    color (or absent), center and thirds;
  - query 4: the same for the shape the instruction names first;
  - query 5: the shape it names second, and whether the first is left or
    right of it, above or below it;
  - query 6: how many shapes there are.
"""

import torch

from iblip_model.demo import raster, shapes

IGNORE = -100
ABSENT_COLOR = len(shapes.COLOR_NAMES)
BACKGROUND_KIND = len(shapes.SHAPES)
SLOTS, NAMED, OTHER, COUNT = 0, 4, 5, 6


def _third(value):
    return 0 if value < 1 / 3 else 1 if value < 2 / 3 else 2


def describe(obj):
    """(color class, [x, y], [x third, y third]) of a shape, or of no shape."""
    if obj is None:
        return ABSENT_COLOR, [float("nan")] * 2, [IGNORE] * 2
    x, y = shapes.center(obj)
    return shapes.COLOR_NAMES.index(obj["color"]), [x, y], [_third(x), _third(y)]


def patch_labels(scene, grid):
    """([grid * grid, 2] long, [grid * grid, 2] float): the kind and color
    of the shape covering most of each patch, if it covers at least 5% of
    it (a small shape across four patches still marks them), else the
    background classes; and that shape's center (NaN for background)."""
    best = torch.zeros(grid, grid)
    labels = torch.tensor([[BACKGROUND_KIND, ABSENT_COLOR]]).repeat(grid * grid, 1).view(grid, grid, 2)
    centers = torch.full((grid, grid, 2), float("nan"))
    for obj in scene["objects"]:
        top, left, fraction = raster.coverage(obj["shape"], obj["box"], grid, grid, 4, obj["detail"])
        fraction = torch.from_numpy(fraction)
        h, w = fraction.shape
        region = best[top: top + h, left: left + w]
        wins = (fraction >= 0.05) & (fraction > region)
        region[wins] = fraction[wins]
        labels[top: top + h, left: left + w][wins] = torch.tensor(
            [shapes.SHAPES.index(obj["shape"]), shapes.COLOR_NAMES.index(obj["color"])])
        centers[top: top + h, left: left + w][wins] = torch.tensor(shapes.center(obj))
    return labels.view(grid * grid, 2), centers.view(grid * grid, 2)


class SceneLabels:
    """Per image: slot descriptions [4, ...] and the count; per question:
    the named shapes' descriptions and their relation."""

    def __init__(self):
        self.colors, self.xy, self.thirds = [], [], []
        self.relation = []
        self.count = []
        self.named_kinds = []

    def add_image(self, scene):
        by_kind = {o["shape"]: o for o in scene["objects"]}
        described = [describe(by_kind.get(kind)) for kind in shapes.SHAPES]
        self.count.append(len(scene["objects"]))
        return described

    def add_question(self, scene, slot_descriptions, named):
        """named: the shapes the instruction names (0-2)."""
        by_kind = {o["shape"]: o for o in scene["objects"]}
        first = describe(by_kind.get(named[0])) if named else (IGNORE, [float("nan")] * 2, [IGNORE] * 2)
        second = describe(by_kind.get(named[1])) if len(named) > 1 else (
            IGNORE, [float("nan")] * 2, [IGNORE] * 2)
        rows = slot_descriptions + [first, second]
        self.colors.append([r[0] for r in rows])
        self.xy.append([r[1] for r in rows])
        self.thirds.append([r[2] for r in rows])
        relation = [IGNORE, IGNORE]
        if len(named) > 1 and named[0] in by_kind and named[1] in by_kind:
            (ax, ay), (bx, by) = shapes.center(by_kind[named[0]]), shapes.center(by_kind[named[1]])
            relation = [int(ax > bx), int(ay > by)]
        self.relation.append(relation)
        kinds = [shapes.SHAPES.index(k) if k in by_kind else IGNORE for k in named[:2]]
        self.named_kinds.append(kinds + [IGNORE] * (2 - len(kinds)))

    def tensors(self, questions_per_image):
        count = torch.tensor(self.count).repeat_interleave(questions_per_image)
        return (torch.tensor(self.colors), torch.tensor(self.xy), torch.tensor(self.thirds),
                torch.tensor(self.relation), count, torch.tensor(self.named_kinds))


class PatchProbe(torch.nn.Module):
    def __init__(self, hidden, grid):
        super().__init__()
        self.kind = torch.nn.Linear(hidden, len(shapes.SHAPES) + 1)
        self.color = torch.nn.Linear(hidden, len(shapes.COLOR_NAMES) + 1)
        self.place = torch.nn.Linear(hidden, 2)
        self.center = torch.nn.Linear(hidden, 2)
        cells = torch.arange(grid * grid, dtype=torch.float32)
        self.register_buffer("patch_xy", torch.stack([(cells % grid + 0.5) / grid,
                                                      (cells // grid + 0.5) / grid], 1),
                             persistent=False)

    def forward(self, image_embeds, labels):
        classes, centers = labels
        patches = image_embeds[:, 1:]
        ce = torch.nn.functional.cross_entropy
        place = self.place(patches)
        # Each of a shape's patches also points at the shape's center: the
        # Q-Former's average over them is then finer than the patch grid.
        center = self.center(patches)
        known = ~torch.isnan(centers)
        # Kinds on the shapes' patches alone, object or not on all: most
        # patches are background, which drowned the kinds' share.
        kind_logits = self.kind(patches)
        is_object = classes[..., 0] != BACKGROUND_KIND
        kind_loss = torch.nn.functional.binary_cross_entropy_with_logits(
            kind_logits[..., BACKGROUND_KIND], (~is_object).float())
        if is_object.any():
            kind_loss = kind_loss + ce(kind_logits[..., :BACKGROUND_KIND][is_object], classes[..., 0][is_object])
        return {"patch_kind": kind_loss,
                "patch_color": ce(self.color(patches).flatten(0, 1), classes[..., 1].flatten()),
                "patch_place": 5 * torch.nn.functional.l1_loss(place, self.patch_xy.expand_as(place)),
                "patch_center": 5 * torch.nn.functional.l1_loss(center[known], centers[known])}


class QueryProbe(torch.nn.Module):
    """Heads on Q-Former queries 0-6 (see the module's docstring)."""

    def __init__(self, hidden):
        super().__init__()
        self.color = torch.nn.Linear(hidden, len(shapes.COLOR_NAMES) + 1)
        self.xy = torch.nn.Linear(hidden, 2)
        self.thirds = torch.nn.Linear(hidden, 6)
        self.relation = torch.nn.Linear(hidden, 4)
        self.count = torch.nn.Linear(hidden, shapes.MAX_SHAPES + 1)

    def forward(self, query_outputs, labels):
        colors, xy, thirds, relation, count, _ = labels
        described = query_outputs[:, SLOTS: OTHER + 1]  # [b, 6, h]
        ce = torch.nn.functional.cross_entropy
        color_logits = self.color(described)
        losses = {"slot_color": ce(color_logits[:, :OTHER - 1].flatten(0, 1), colors[:, :OTHER - 1].flatten()),
                  "named_color": ce(color_logits[:, NAMED:].flatten(0, 1), colors[:, NAMED:].flatten(),
                                    ignore_index=IGNORE)}
        predicted = self.xy(described)
        known = ~torch.isnan(xy)
        if known.any():
            losses["xy"] = 5 * torch.nn.functional.l1_loss(predicted[known], xy[known])
        third_logits = self.thirds(described).view(*described.shape[:2], 2, 3)
        losses["thirds"] = ce(third_logits.flatten(0, 2), thirds.flatten(), ignore_index=IGNORE)
        if (relation != IGNORE).any():
            relation_logits = self.relation(query_outputs[:, OTHER]).view(-1, 2, 2)
            losses["relation"] = ce(relation_logits.flatten(0, 1), relation.flatten(), ignore_index=IGNORE)
        losses["count"] = ce(self.count(query_outputs[:, COUNT]), count)
        return losses


def attention_loss(probs, patches, named_kinds):
    """The first cross-attention layer's attention (mean over heads) of
    queries 0-6 should rest on the patches of what each one describes: its
    kind's shape, the named shapes, every shape (for the count). Binding a
    query to a shape from the answers alone is slow (a query must single
    out a few patches among 144); this teaches it directly.

    probs: [questions, heads, queries, 1 + patches]; patches: batched
    patch_labels; named_kinds: [questions, 2]."""
    kinds = patches[0][..., 0].repeat_interleave(probs.shape[0] // patches[0].shape[0], 0)
    named = named_kinds.clamp(min=0)[..., None]
    masks = torch.stack([kinds == k for k in range(len(shapes.SHAPES))]
                        + [(kinds == named[:, 0]) & (named_kinds[:, :1] != IGNORE),
                           (kinds == named[:, 1]) & (named_kinds[:, 1:] != IGNORE),
                           kinds != BACKGROUND_KIND], dim=1).float()  # [q, 7, patches]
    area = masks.sum(-1)
    attended = probs.mean(1)[:, SLOTS: COUNT + 1, 1:]
    picked = -(masks * torch.log(attended + 1e-6)).sum(-1) / area.clamp(min=1)
    return picked[area > 0].mean()


def grouping_loss(probs, patches):
    """One head of a ViT layer should let each patch of a shape look at the
    whole shape (its patches, no others): a shape's kind is in its outline,
    spread over its patches (a square's straight edges and right corners, a
    star's points), and the answers alone never taught the ViT to pool it
    (after 600 steps it told kinds apart at chance while finding shapes
    perfectly). probs: [images, 1 + patches, 1 + patches] of that head."""
    kinds = patches[0][..., 0]
    same = (kinds[:, :, None] == kinds[:, None, :]) & (kinds[:, :, None] != BACKGROUND_KIND)
    same = same.float()
    area = same.sum(-1)
    picked = -(same * torch.log(probs[:, 1:, 1:] + 1e-6)).sum(-1) / area.clamp(min=1)
    return picked[area > 0].mean()
