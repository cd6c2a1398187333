"""dubeval: `make eval` — held-out evaluation of the dub model through the real farm.

Modules: config (the one EvalConfig), media (ffmpeg in and out), faces (dlib: detector,
landmarks, descriptors), mel (log-mel in numpy), metrics (PSNR/SSIM/LMD/jitter/identity),
swapmetrics (the face-swap rows: distance to the source photo, identity spread, expression and
pose kept), sync (the evaluation sync model: cache, training, offset search, confidence), farm (running
the systems through dubfarm), report (table, JSON, contact sheets, loss curves).
"""
