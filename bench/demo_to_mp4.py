"""Turn a COPY of a built demo (BLINDPAIR_DATA_DIR) into an MP4 study with the same frames, for
bench/pair_lighthouse.py: every done clip re-encoded with the study-wide MP4 settings (app.media.video.encode),
the study set to clip_format mp4. Rewrites the database it is pointed at; never run it on real data.
"""
import numpy as np
from sqlalchemy import select

from app.db import get_sessionmaker
from app.media import gif, video
from app.media.storage import read_bytes, store_bytes
from app.models import Clip, Study

Session = get_sessionmaker()
with Session() as s:
    for study in s.scalars(select(Study)):
        study.settings = {**(study.settings or {}), "clip_format": "mp4"}
    n = 0
    for clip in s.scalars(select(Clip).where(Clip.status == "done", Clip.storage_name.is_not(None))):
        frames = [np.asarray(f.convert("RGB")) for f in gif.decode_frames(read_bytes(clip.storage_name, clip.storage))]
        data = video.encode(frames, clip.fps or 8, "mp4")
        stored = store_bytes(data, ".mp4", store=clip.storage)
        clip.storage_name = stored.storage_name
        if hasattr(clip, "sha256"):
            clip.sha256 = stored.sha256
        if hasattr(clip, "size_bytes"):
            clip.size_bytes = stored.size_bytes
        n += 1
    s.commit()
    print("converted", n)
