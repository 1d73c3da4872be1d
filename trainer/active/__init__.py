"""Active learning: pick the most informative unlabelled images, package them for annotators, import the result.

- uncertainty: per-detection and per-image scores (least confidence, entropy, margin, disagreement)
- select: run a model over a pool, suppress near-duplicates, choose K
- package: the vendor zip (COCO drafts, images, thumbnails, manifest with checksums)
- vendor_import: validate returned COCO annotations and merge them all-or-nothing
- commands: the `active select` / `active import` command group
"""
