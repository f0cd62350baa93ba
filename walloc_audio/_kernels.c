/* The codec's hot loops in C: the CDF 9/7 packet tree of walloc_audio.lifting and its inverse (the
 * encoder's analysis, the decoder's synthesis), and the context scales of a version-2 packet.
 *
 * The packet tree:
 *
 * Same steps, same order of float32 operations as the NumPy path (each step is
 * target[k] + c * (source[k] + source[k +/- 1]), zero outside the row), built with
 * -ffp-contract=off so no multiply-add is fused: the two paths give identical bits, and
 * the tests check that. Each level reads a band's row once to split it into its even (s)
 * and odd (d) samples and runs the four lifting steps on the halves, while they sit in
 * the cache; the NumPy path makes a dozen passes over the whole signal per level.
 *
 * packet_tree(x, out, work, levels, alpha, beta, gamma, delta)
 *   x:    float32 [C, n], C-contiguous, n a multiple of 2**levels (read only)
 *   out:  float32 [C, 2**levels, n / 2**levels] (written), natural (Paley) band order
 *   work: float32 scratch of C * n values
 * packet_untree(bands, out, work, levels, alpha, beta, gamma, delta): the inverse, bands
 *   [C, 2**levels, m] (natural order, unscaled) into out [C, m * 2**levels] (the decoder's synthesis).
 * The GIL is released while they run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void predict(float *restrict d, const float *restrict s, Py_ssize_t h, float c) {
    /* d[k] += c (s[k] + s[k+1]), s past the end is zero */
    for (Py_ssize_t k = 0; k + 1 < h; k++) d[k] += c * (s[k] + s[k + 1]);
    d[h - 1] += c * s[h - 1];
}

static void update(float *restrict s, const float *restrict d, Py_ssize_t h, float c) {
    /* s[k] += c (d[k-1] + d[k]), d before the start is zero */
    s[0] += c * d[0];
    for (Py_ssize_t k = 1; k < h; k++) s[k] += c * (d[k - 1] + d[k]);
}

static void tree(const float *x, float *out, float *work, Py_ssize_t channels, Py_ssize_t n, int levels,
                 const float coef[4]) {
    for (Py_ssize_t ch = 0; ch < channels; ch++) {
        const float *src = x + ch * n;
        float *bufs[2] = {work + ch * n, out + ch * n};
        int which = levels % 2; /* buffers alternate so that the last level lands in out */
        Py_ssize_t len = n, bands = 1;
        if (levels == 0) memcpy(out + ch * n, src, sizeof(float) * (size_t)n);
        for (int lev = 0; lev < levels; lev++) {
            float *dst = bufs[which];
            Py_ssize_t h = len / 2;
            for (Py_ssize_t r = 0; r < bands; r++) {
                const float *in = src + r * len;
                float *s = dst + 2 * r * h, *d = s + h;
                for (Py_ssize_t k = 0; k < h; k++) {
                    s[k] = in[2 * k];
                    d[k] = in[2 * k + 1];
                }
                predict(d, s, h, coef[0]);
                update(s, d, h, coef[1]);
                predict(d, s, h, coef[2]);
                update(s, d, h, coef[3]);
            }
            src = dst;
            which ^= 1;
            len = h;
            bands *= 2;
        }
    }
}

static void unpredict(float *restrict d, const float *restrict s, Py_ssize_t h, float c) {
    for (Py_ssize_t k = 0; k + 1 < h; k++) d[k] -= c * (s[k] + s[k + 1]);
    d[h - 1] -= c * s[h - 1];
}

static void unupdate(float *restrict s, const float *restrict d, Py_ssize_t h, float c) {
    s[0] -= c * d[0];
    for (Py_ssize_t k = 1; k < h; k++) s[k] -= c * (d[k - 1] + d[k]);
}

/* The inverse tree: bands [C, 2**levels, m] (natural order, unscaled) -> signal [C, m * 2**levels].
 * Each level undoes the four steps on a pair of sibling bands in reverse order, then interleaves
 * them into their parent band. */
static void untree(const float *coef, float *out, float *work, Py_ssize_t channels, Py_ssize_t n, int levels,
                   const float coef4[4]) {
    for (Py_ssize_t ch = 0; ch < channels; ch++) {
        float *a = work + ch * n, *b = out + ch * n;
        memcpy(levels % 2 ? a : b, coef + ch * n, sizeof(float) * (size_t)n);
        float *src = levels % 2 ? a : b, *dst = levels % 2 ? b : a; /* the last level lands in out */
        Py_ssize_t h = levels ? n >> levels : n, pairs = levels ? (Py_ssize_t)1 << (levels - 1) : 0;
        for (int lev = levels; lev > 0; lev--) {
            for (Py_ssize_t r = 0; r < pairs; r++) {
                float *s = src + 2 * r * h, *d = s + h, *parent = dst + 2 * r * h;
                unupdate(s, d, h, coef4[3]);
                unpredict(d, s, h, coef4[2]);
                unupdate(s, d, h, coef4[1]);
                unpredict(d, s, h, coef4[0]);
                for (Py_ssize_t k = 0; k < h; k++) {
                    parent[2 * k] = s[k];
                    parent[2 * k + 1] = d[k];
                }
            }
            float *t = src;
            src = dst;
            dst = t;
            h *= 2;
            pairs /= 2;
        }
    }
}

/* Buffers of the arguments: C-contiguous, of the given struct format and item size (int64 also as
 * "l" where long is 8 bytes), writable where bit i of `writable` is set. On failure the ones taken
 * are released and an exception is set. */
static int get_buffers(PyObject *const *objs, Py_buffer *views, int n, const char *const *fmt,
                       const Py_ssize_t *size, const char *const *name, unsigned writable) {
    for (int i = 0; i < n; i++) {
        int w = (writable >> i) & 1;
        if (PyObject_GetBuffer(objs[i], &views[i], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (w ? PyBUF_WRITABLE : 0)) < 0) {
            for (int j = 0; j < i; j++) PyBuffer_Release(&views[j]);
            return -1;
        }
        const char *got = views[i].format;
        int ok = views[i].itemsize == size[i] && got != NULL &&
                 (strcmp(got, fmt[i]) == 0 || (fmt[i][0] == 'q' && strcmp(got, "l") == 0 && size[i] == sizeof(long)));
        if (!ok) {
            if (size[i] == 4 && fmt[i][0] == 'f')
                PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous float32 buffer", name[i]);
            else
                PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous buffer of format %s", name[i], fmt[i]);
            for (int j = 0; j <= i; j++) PyBuffer_Release(&views[j]);
            return -1;
        }
    }
    return 0;
}

static void release_buffers(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++) PyBuffer_Release(&views[i]);
}

/* packet_tree and packet_untree: (source, out, work, levels, alpha, beta, gamma, delta). */
static PyObject *tree_call(PyObject *args, int inverse) {
    PyObject *o[3];
    int levels;
    float coef[4];
    if (!PyArg_ParseTuple(args, "OOOiffff", &o[0], &o[1], &o[2], &levels, &coef[0], &coef[1], &coef[2], &coef[3]))
        return NULL;
    static const char *fmt[3] = {"f", "f", "f"};
    static const Py_ssize_t size[3] = {4, 4, 4};
    const char *name[3] = {inverse ? "bands" : "x", "out", "work"};
    Py_buffer v[3];
    if (get_buffers(o, v, 3, fmt, size, name, 0x6) < 0) return NULL;
    PyObject *result = NULL;
    const Py_buffer *src = &v[0];
    Py_ssize_t channels = src->ndim == (inverse ? 3 : 2) ? src->shape[0] : 0, n = 0;
    if (!inverse) {
        n = channels > 0 ? src->len / 4 / channels : 0;
        if (levels < 0 || levels > 20 || channels < 1 || n < 1 || n % ((Py_ssize_t)1 << levels) != 0) {
            PyErr_SetString(PyExc_ValueError, "x must be [C, n] with n a positive multiple of 2**levels");
            goto done;
        }
    } else {
        if (levels < 0 || levels > 20 || channels < 1 || src->shape[1] != ((Py_ssize_t)1 << levels) || src->shape[2] < 1) {
            PyErr_SetString(PyExc_ValueError, "bands must be [C, 2**levels, m] with m >= 1");
            goto done;
        }
        n = src->shape[1] * src->shape[2];
    }
    if (v[1].len != src->len || v[2].len < src->len) {
        PyErr_SetString(PyExc_ValueError, "out must hold C * n values and work at least as many");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (inverse)
        untree((const float *)src->buf, (float *)v[1].buf, (float *)v[2].buf, channels, n, levels, coef);
    else
        tree((const float *)src->buf, (float *)v[1].buf, (float *)v[2].buf, channels, n, levels, coef);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    release_buffers(v, 3);
    return result;
}

static PyObject *packet_tree(PyObject *self, PyObject *args) {
    (void)self;
    return tree_call(args, 0);
}

static PyObject *packet_untree(PyObject *self, PyObject *args) {
    (void)self;
    return tree_call(args, 1);
}

/* The activity of channel c (entropy._activity): magnitudes a1, a2, a3 of the frames one, two and
 * three back ([L] each), neighbour rows nb [4, L] = c-2, c-1, c+1, c+2. */
static inline int64_t activity(const int64_t *a1, const int64_t *a2, const int64_t *a3, const int64_t *nb,
                               Py_ssize_t L, Py_ssize_t c) {
    return 4 * a1[c] + 2 * a2[c] + a3[c] + 2 * (a1[nb[L + c]] + a1[nb[2 * L + c]]) + a1[nb[c]] + a1[nb[3 * L + c]];
}

/* Every index the context kernels follow stays inside its array. */
static int valid_context(const int64_t *rows, Py_ssize_t La, const int64_t *nb, Py_ssize_t L, const int64_t *lut,
                         Py_ssize_t cap, Py_ssize_t B) {
    for (Py_ssize_t i = 0; i < La; i++)
        if (rows[i] < 0 || rows[i] >= L) return 0;
    for (Py_ssize_t i = 0; i < 4 * L; i++)
        if (nb[i] < 0 || nb[i] >= L) return 0;
    for (Py_ssize_t i = 0; i <= cap; i++)
        if (lut[i] < 0 || lut[i] >= B) return 0;
    return 1;
}

/* context_scales(symbols, rows, neighbours, lut, table, out): the Laplace scale of every coded
 * symbol of a version-2 packet, frame-major, as walloc_audio.adaptive computes it with NumPy
 * (entropy.context_features, then the bucket table): integers only, so the same scales.
 *   symbols     int32 [L, F]        the packet's symbols
 *   rows        int64 [La]          the coded channels
 *   neighbours  int64 [4, L]        rows c-2, c-1, c+1, c+2 (mirrored at the edges)
 *   lut         int64 [cap + 1]     bucket of an activity 0..cap (activities above cap: lut[cap])
 *   table       float64 [La, B]     scale of each coded channel by bucket (bucket 0: the first frame)
 *   out         float64 [F, La]     written
 */
static PyObject *context_scales(PyObject *self, PyObject *args) {
    PyObject *o[6];
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5])) return NULL;
    static const char *fmt[6] = {"i", "q", "q", "q", "d", "d"};
    static const Py_ssize_t size[6] = {4, 8, 8, 8, 8, 8};
    static const char *name[6] = {"symbols", "rows", "neighbours", "lut", "table", "out"};
    Py_buffer v[6];
    if (get_buffers(o, v, 6, fmt, size, name, 1u << 5) < 0) return NULL;
    PyObject *result = NULL;
    Py_ssize_t L = v[0].ndim == 2 ? v[0].shape[0] : 0, F = v[0].ndim == 2 ? v[0].shape[1] : 0;
    Py_ssize_t La = v[1].len / 8, cap = v[3].len / 8 - 1, B = La ? v[4].len / 8 / La : 0;
    const int32_t *q = (const int32_t *)v[0].buf;
    const int64_t *rows = (const int64_t *)v[1].buf, *nb = (const int64_t *)v[2].buf, *lut = (const int64_t *)v[3].buf;
    const double *table = (const double *)v[4].buf;
    double *out = (double *)v[5].buf;
    int ok = L >= 1 && F >= 1 && cap >= 0 && v[2].len == 4 * 8 * L && v[5].len == 8 * F * La &&
             (La == 0 || (B >= 1 && v[4].len == 8 * La * B));
    if (!ok || !valid_context(rows, La, nb, L, lut, cap, B)) {
        PyErr_SetString(PyExc_ValueError, "context_scales: inconsistent shapes or indices");
        goto done;
    }
    int64_t *mag = PyMem_RawMalloc(sizeof(int64_t) * (size_t)(L * F)); /* |q| frame-major [F, L] */
    if (mag == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < L; c++)
        for (Py_ssize_t t = 0; t < F; t++) mag[t * L + c] = llabs((long long)q[c * F + t]);
    for (Py_ssize_t i = 0; i < La; i++) out[i] = table[i * B];
    for (Py_ssize_t t = 1; t < F; t++) {
        const int64_t *a1 = mag + (t - 1) * L, *a2 = mag + (t >= 2 ? t - 2 : 0) * L,
                      *a3 = mag + (t >= 3 ? t - 3 : 0) * L;
        for (Py_ssize_t i = 0; i < La; i++) {
            int64_t f = activity(a1, a2, a3, nb, L, rows[i]);
            out[t * La + i] = table[i * B + lut[f < cap ? f : cap]];
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(mag);
    result = Py_None;
    Py_INCREF(result);
done:
    release_buffers(v, 6);
    return result;
}

/* decoder_step(qt, mags, t, rows, neighbours, lut, table, out): the decoder's per-frame context step.
 * Stores the magnitudes of frame t's decoded symbols (qt, int32 [La], the coded channels') into
 * mags (int64 [F, L], frame-major, zero elsewhere), then writes frame t + 1's scales into out
 * (float64 [La]) -- the same activity as context_scales, so the decoder reads what the encoder wrote. */
static PyObject *decoder_step(PyObject *self, PyObject *args) {
    PyObject *o[7];
    Py_ssize_t t;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnOOOOO", &o[0], &o[1], &t, &o[2], &o[3], &o[4], &o[5], &o[6])) return NULL;
    static const char *fmt[7] = {"i", "q", "q", "q", "q", "d", "d"};
    static const Py_ssize_t size[7] = {4, 8, 8, 8, 8, 8, 8};
    static const char *name[7] = {"qt", "mags", "rows", "neighbours", "lut", "table", "out"};
    Py_buffer v[7];
    if (get_buffers(o, v, 7, fmt, size, name, (1u << 1) | (1u << 6)) < 0) return NULL;
    PyObject *result = NULL;
    Py_ssize_t La = v[2].len / 8, L = v[1].ndim == 2 ? v[1].shape[1] : 0, F = v[1].ndim == 2 ? v[1].shape[0] : 0;
    Py_ssize_t cap = v[4].len / 8 - 1, B = La ? v[5].len / 8 / La : 0;
    const int32_t *qt = (const int32_t *)v[0].buf;
    int64_t *mags = (int64_t *)v[1].buf;
    const int64_t *rows = (const int64_t *)v[2].buf, *nb = (const int64_t *)v[3].buf, *lut = (const int64_t *)v[4].buf;
    const double *table = (const double *)v[5].buf;
    double *out = (double *)v[6].buf;
    int ok = L >= 1 && t >= 0 && t + 1 < F && cap >= 0 && v[0].len == 4 * La && v[3].len == 4 * 8 * L &&
             v[6].len == 8 * La && (La == 0 || (B >= 1 && v[5].len == 8 * La * B));
    if (!ok || !valid_context(rows, La, nb, L, lut, cap, B)) {
        PyErr_SetString(PyExc_ValueError, "decoder_step: inconsistent shapes or indices");
        goto done;
    }
    int64_t *a1 = mags + t * L;
    const int64_t *a2 = mags + (t >= 1 ? t - 1 : 0) * L, *a3 = mags + (t >= 2 ? t - 2 : 0) * L;
    for (Py_ssize_t i = 0; i < La; i++) a1[rows[i]] = llabs((long long)qt[i]);
    for (Py_ssize_t i = 0; i < La; i++) {
        int64_t f = activity(a1, a2, a3, nb, L, rows[i]);
        out[i] = table[i * B + lut[f < cap ? f : cap]];
    }
    result = Py_None;
    Py_INCREF(result);
done:
    release_buffers(v, 7);
    return result;
}

static PyMethodDef methods[] = {
    {"decoder_step", decoder_step, METH_VARARGS, "Store a decoded frame's magnitudes, give the next frame's scales."},
    {"context_scales", context_scales, METH_VARARGS, "Scales of a version-2 packet's coded symbols, frame-major."},
    {"packet_tree", packet_tree, METH_VARARGS, "CDF 9/7 packet tree of float32 [C, n] into out (see the module)."},
    {"packet_untree", packet_untree, METH_VARARGS, "Its inverse: bands [C, 2**J, m] into out [C, m * 2**J]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "The codec's hot loops in C (see the source).", -1,
                                     methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
