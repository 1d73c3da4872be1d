"""Bundle archives (.tar.gz) extracted once per checksum into a managed cache folder.

Loading an archive used to extract it into a new temporary folder at every
load and SIGHUP reload, never removed (26 copies, 93 MB in one test). Now the
archive's SHA-256 names its folder: a reload of the same archive reuses it, a
new archive gets a new folder, and only the `keep` most recently used folders
stay. Extraction goes to a staging folder renamed into place, so a crash
never leaves a half-extracted bundle that looks complete.

The cache folder is `cache_dir`, else $REEFWATCH_CACHE_DIR/bundles, else
$XDG_CACHE_HOME/reefwatch/bundles (~/.cache/reefwatch/bundles). The systemd
unit gives the daemon CacheDirectory=reefwatch and sets REEFWATCH_CACHE_DIR.
"""
import logging
import os
import shutil
import tarfile
import tempfile
import time

from edge.errors import BundleError

logger = logging.getLogger(__name__)

KEEP_EXTRACTED = 3
_STAGING_PREFIX = ".extracting-"


def default_cache_dir(environ=None):
    environ = os.environ if environ is None else environ
    if environ.get("REEFWATCH_CACHE_DIR"):
        return os.path.join(environ["REEFWATCH_CACHE_DIR"], "bundles")
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "reefwatch", "bundles")


def extract_archive(archive, extract_dir=None, cache_dir=None, keep=KEEP_EXTRACTED):
    """The bundle root inside the extracted `archive`; BundleError for a bad or unsafe archive."""
    if not archive.endswith((".tar.gz", ".tgz")):
        raise BundleError("bundle %s is a file but not a .tar.gz; pass the bundle folder or its archive" % archive)
    try:
        if extract_dir is not None:
            os.makedirs(extract_dir, exist_ok=True)
            return _bundle_root(_safe_extract(archive, extract_dir))
        cache_dir = cache_dir or default_cache_dir()
        os.makedirs(cache_dir, exist_ok=True)
        from edge.bundle import sha256_of

        target = os.path.join(cache_dir, sha256_of(archive))
        if not os.path.isdir(target):
            staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=cache_dir)
            try:
                _safe_extract(archive, staging)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        os.utime(target, None)  # most recently used
        prune_cache(cache_dir, keep=keep, protect=target)
        return _bundle_root(target)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleError("bundle archive %s cannot be extracted: %s" % (archive, e)) from e


def prune_cache(cache_dir, keep=KEEP_EXTRACTED, protect=None, stale_staging_s=3600.0):
    """Remove all but the `keep` most recently used bundles, and staging folders of crashed extractions."""
    entries = []
    now = time.time()
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        mtime = os.stat(path).st_mtime
        if name.startswith(_STAGING_PREFIX):
            if now - mtime > stale_staging_s:
                shutil.rmtree(path, ignore_errors=True)
            continue
        entries.append((mtime, path))
    entries.sort(reverse=True)
    for _, path in entries[keep:]:
        if path != protect:
            logger.info("bundle cache: removing %s (keeping the %d most recently used)", path, keep)
            shutil.rmtree(path, ignore_errors=True)


def _safe_extract(archive, dest):
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            target = os.path.normpath(os.path.join(dest, member.name))
            if os.path.isabs(member.name) or not (target + os.sep).startswith(os.path.normpath(dest) + os.sep):
                raise BundleError("%s: entry %r escapes the bundle; refusing to extract" % (archive, member.name))
            if not (member.isfile() or member.isdir()):
                raise BundleError("%s: entry %r is a link or device; bundles hold plain files only"
                                  % (archive, member.name))
        # Members were checked above; the 'data' filter (Python >= 3.12) checks again.
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dest


def _bundle_root(folder):
    from edge.bundle import MANIFEST

    entries = os.listdir(folder)
    if MANIFEST not in entries and len(entries) == 1 and os.path.isdir(os.path.join(folder, entries[0])):
        return os.path.join(folder, entries[0])
    return folder
