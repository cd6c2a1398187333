#include <libavformat/avformat.h>
#include <libavcodec/avcodec.h>
#include <libavcodec/bsf.h>
#include <libavutil/avutil.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libavutil/display.h>
#include <libavutil/channel_layout.h>
#include <libavutil/audio_fifo.h>
#include <libswscale/swscale.h>
#include <libswresample/swresample.h>

/* Function-like macros Swift cannot import. */
static inline int cffmpeg_averror(int e) { return AVERROR(e); }
static inline int cffmpeg_averror_eof(void) { return AVERROR_EOF; }
static inline int64_t cffmpeg_nopts(void) { return AV_NOPTS_VALUE; }

/* Small helpers so Swift never has to index C fixed-size arrays (imported as tuples). */
static inline uint8_t *cffmpeg_frame_plane(const AVFrame *f, int i) { return f->data[i]; }
static inline int cffmpeg_frame_linesize(const AVFrame *f, int i) { return f->linesize[i]; }
static inline int cffmpeg_closed_gop_flag(void) { return (int)AV_CODEC_FLAG_CLOSED_GOP; }

/* Converts a whole frame into up to three destination planes. */
static inline int cffmpeg_scale_from_frame(struct SwsContext *c, const AVFrame *src,
                                           uint8_t *d0, int s0, uint8_t *d1, int s1, uint8_t *d2, int s2) {
    uint8_t *dst[4] = { d0, d1, d2, NULL };
    int ds[4] = { s0, s1, s2, 0 };
    return sws_scale(c, (const uint8_t *const *)src->data, src->linesize, 0, src->height, dst, ds);
}

/* Converts up to three source planes of height h into an allocated frame. */
static inline int cffmpeg_scale_to_frame(struct SwsContext *c, const uint8_t *p0, int s0, const uint8_t *p1, int s1,
                                         const uint8_t *p2, int s2, int h, AVFrame *dst) {
    const uint8_t *src[4] = { p0, p1, p2, NULL };
    int ss[4] = { s0, s1, s2, 0 };
    return sws_scale(c, src, ss, 0, h, dst->data, dst->linesize);
}

/* Frame to frame conversion (both allocated). */
static inline int cffmpeg_scale_frame_to_frame(struct SwsContext *c, const AVFrame *src, AVFrame *dst) {
    return sws_scale(c, (const uint8_t *const *)src->data, src->linesize, 0, src->height, dst->data, dst->linesize);
}

/* Resamples a decoded audio frame (or flushes when src is NULL) into caller buffers. */
static inline int cffmpeg_swr_convert(SwrContext *s, uint8_t **out, int outCount, const AVFrame *src) {
    if (!src) return swr_convert(s, out, outCount, NULL, 0);
    return swr_convert(s, out, outCount, (const uint8_t **)src->extended_data, src->nb_samples);
}

/* Rotation (degrees, counter-clockwise, as ffprobe reports it) from a stream's display matrix. */
static inline int cffmpeg_stream_rotation(const AVStream *st, double *degrees) {
    size_t size = 0;
    const uint8_t *m = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (!m || size < 9 * sizeof(int32_t)) return 0;
    double d = av_display_rotation_get((const int32_t *)m);
    if (d != d) return 0; /* NaN */
    *degrees = d;
    return 1;
}

/* Attaches a display matrix rotating by `degrees` (counter-clockwise) to an output stream. */
static inline int cffmpeg_stream_set_rotation(AVStream *st, double degrees) {
    uint8_t *m = av_stream_new_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, 9 * sizeof(int32_t));
    if (!m) return AVERROR(ENOMEM);
    /* av_display_rotation_set takes a clockwise angle; av_display_rotation_get returns a
       counter-clockwise one. Negate so that get(set(d)) == d. */
    av_display_rotation_set((int32_t *)m, -degrees);
    return 0;
}

/* FFmpeg's last error-level log line on this thread, so errors can say *why* FFmpeg refused a
   file ("moov atom not found", "Picture size 100000x100000 is invalid") where the error code
   alone is vague or misleading. Installing the callback also keeps FFmpeg off stderr. */
#include <stdio.h>
#include <stdarg.h>
/* Storage lives in a function: Swift's importer emits functions from this header, not variables. */
static inline char *cffmpeg_last_log_buffer(void) {
    static _Thread_local char line[256];
    return line;
}
static inline void cffmpeg_log_callback(void *avcl, int level, const char *fmt, va_list vl) {
    (void)avcl;
    if (level > AV_LOG_ERROR || fmt == NULL) return;
    vsnprintf(cffmpeg_last_log_buffer(), 256, fmt, vl);
}
static inline void cffmpeg_capture_log(void) { av_log_set_callback(cffmpeg_log_callback); }
static inline void cffmpeg_clear_last_log(void) { cffmpeg_last_log_buffer()[0] = 0; }
static inline const char *cffmpeg_last_log(void) { return cffmpeg_last_log_buffer(); }
