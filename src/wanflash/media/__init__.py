"""Media: PyAV encoding of frames (and audio) to MP4/WEBM/MOV, probing of outputs, decoding of files, and the hardened
checks that decode untrusted image, audio and base64 input (:mod:`wanflash.media.checks`)."""
