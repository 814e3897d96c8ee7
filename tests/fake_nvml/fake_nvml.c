/* A fake libnvidia-ml.so.1 for tests: the NVML C entry points pynvml (and so gputui) calls, answering from a
 * JSON spec file named by $FAKE_NVML_SPEC instead of from a driver. Built by build.sh; put its folder on
 * LD_LIBRARY_PATH and pynvml's CDLL("libnvidia-ml.so.1") loads it as it would the real one.
 *
 * The spec (all sizes in MiB, power in watts, energy in millijoules):
 *   {"driver_version": "550.54.15", "nvml_version": "12.550.54.15", "cuda_driver_version": 12040,
 *    "init_error": "driver_not_loaded",            (optional: every nvmlInit* fails with this)
 *    "devices": [{"name": "...", "uuid": "GPU-...", "lost": false,
 *                 "memory_total_mib": 81920, "memory_used_mib": 1024, "memory_reserved_mib": 0,
 *                 "utilization_gpu": 37, "utilization_memory": 20, "temperature_c": 51,
 *                 "power_w": 210.5, "power_limit_w": 700, "enforced_power_limit_w": 700, "energy_mj": 123,
 *                 "processes": [{"pid": 1234, "used_memory_mib": 2048, "sm_util": 40, "mem_util": 5,
 *                                "gpu_instance_id": 0, "compute_instance_id": 0}],
 *                 "graphics_processes": [],
 *                 "mig": {"current": 1, "pending": 1, "max_count": 7,
 *                         "devices": [{"name": ..., "uuid": "MIG-...", "memory_total_mib": ...,
 *                                      "gpu_instance_id": 1, "compute_instance_id": 0, ...}]}}]}
 * A field's value may instead be an error name ("not_supported", "no_permission", "gpu_is_lost", "unknown",
 * "not_found", "timeout", ...): the call reading it returns that error. A field left out is NOT_SUPPORTED
 * (name and uuid get defaults; memory used defaults to 0). "processes" may be an error name as well, and a
 * process's "used_memory_mib" may be "n/a" (NVML_VALUE_NOT_AVAILABLE, as WDDM reports it). A device with
 * "lost": true answers every call with GPU_IS_LOST. A device with no "mig" says MIG is NOT_SUPPORTED.
 *
 * The spec is read by nvmlInit* (a malformed one fails it with NVML_ERROR_UNKNOWN and a message on stderr) and
 * read again whenever its inode, size or mtime changes (checked by each call that reads device data); a spec
 * that does not parse then keeps the last good one (with a message on stderr), so write it atomically.
 * Handles stay valid across re-reads: a device that left the spec answers GPU_IS_LOST. One mutex guards it all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

static const struct {
    int code;
    const char *name;    /* as a spec names it */
    const char *message; /* as nvmlErrorString says it */
} ERRORS[] = {
    {NVML_SUCCESS, "success", "Success"},
    {NVML_ERROR_UNINITIALIZED, "uninitialized", "Uninitialized"},
    {NVML_ERROR_INVALID_ARGUMENT, "invalid_argument", "Invalid Argument"},
    {NVML_ERROR_NOT_SUPPORTED, "not_supported", "Not Supported"},
    {NVML_ERROR_NO_PERMISSION, "no_permission", "Insufficient Permissions"},
    {NVML_ERROR_ALREADY_INITIALIZED, "already_initialized", "Already Initialized"},
    {NVML_ERROR_NOT_FOUND, "not_found", "Not Found"},
    {NVML_ERROR_INSUFFICIENT_SIZE, "insufficient_size", "Insufficient Size"},
    {NVML_ERROR_INSUFFICIENT_POWER, "insufficient_power", "Insufficient External Power"},
    {NVML_ERROR_DRIVER_NOT_LOADED, "driver_not_loaded", "Driver Not Loaded"},
    {NVML_ERROR_TIMEOUT, "timeout", "Timeout"},
    {NVML_ERROR_IRQ_ISSUE, "irq_issue", "Interrupt Request Issue"},
    {NVML_ERROR_LIBRARY_NOT_FOUND, "library_not_found", "NVML Shared Library Not Found"},
    {NVML_ERROR_FUNCTION_NOT_FOUND, "function_not_found", "Function Not Found"},
    {NVML_ERROR_CORRUPTED_INFOROM, "corrupted_inforom", "Corrupted infoROM"},
    {NVML_ERROR_GPU_IS_LOST, "gpu_is_lost", "GPU is lost"},
    {NVML_ERROR_RESET_REQUIRED, "reset_required", "GPU requires restart"},
    {NVML_ERROR_OPERATING_SYSTEM, "operating_system", "The operating system has blocked the request."},
    {NVML_ERROR_LIB_RM_VERSION_MISMATCH, "lib_rm_version_mismatch", "RM has detected an NVML/RM version mismatch."},
    {NVML_ERROR_IN_USE, "in_use", "In use by another client"},
    {NVML_ERROR_MEMORY, "memory", "Insufficient Memory"},
    {NVML_ERROR_NO_DATA, "no_data", "No data"},
    {NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "argument_version_mismatch", "Argument version mismatch"},
    {NVML_ERROR_UNKNOWN, "unknown", "Unknown Error"},
};
#define N_ERRORS (sizeof(ERRORS) / sizeof(ERRORS[0]))

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fake_nvml: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* -- a small JSON parser: the whole grammar, into a tree -------------------------------------------------- */
typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;
typedef struct jval {
    jtype t;
    double num;
    int boolean;
    char *str;          /* J_STR */
    struct jval **items; /* J_ARR values, J_OBJ values */
    char **keys;         /* J_OBJ */
    size_t n;
} jval;

typedef struct {
    const char *s, *end;
    const char *err;
    size_t line;
} jparser;

#define JSON_MAX_DEPTH 64

static void jfree(jval *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n; i++) {
        jfree(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
}

static void jws(jparser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) {
        if (*p->s == '\n') p->line++;
        p->s++;
    }
}

static int jfail(jparser *p, const char *why) {
    if (!p->err) p->err = why;
    return 0;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static char *jstring(jparser *p) {
    /* at the opening quote */
    p->s++;
    size_t cap = 16, len = 0;
    char *out = malloc(cap);
    if (!out) return (jfail(p, "out of memory"), NULL);
    for (;;) {
        if (p->s >= p->end) {
            free(out);
            return (jfail(p, "unterminated string"), NULL);
        }
        unsigned char c = (unsigned char)*p->s++;
        char buf[4];
        size_t add = 0;
        if (c == '"') break;
        if (c < 0x20) {
            free(out);
            return (jfail(p, "control character in string"), NULL);
        }
        if (c != '\\') {
            buf[0] = (char)c;
            add = 1;
        } else {
            if (p->s >= p->end) {
                free(out);
                return (jfail(p, "unterminated escape"), NULL);
            }
            char e = *p->s++;
            unsigned cp = 0;
            switch (e) {
            case '"': buf[0] = '"'; add = 1; break;
            case '\\': buf[0] = '\\'; add = 1; break;
            case '/': buf[0] = '/'; add = 1; break;
            case 'b': buf[0] = '\b'; add = 1; break;
            case 'f': buf[0] = '\f'; add = 1; break;
            case 'n': buf[0] = '\n'; add = 1; break;
            case 'r': buf[0] = '\r'; add = 1; break;
            case 't': buf[0] = '\t'; add = 1; break;
            case 'u':
                if (p->end - p->s < 4 || !hex4(p->s, &cp)) {
                    free(out);
                    return (jfail(p, "bad \\u escape"), NULL);
                }
                p->s += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
                    unsigned lo = 0;
                    if (p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u' || !hex4(p->s + 2, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF) {
                        free(out);
                        return (jfail(p, "unpaired surrogate in \\u escape"), NULL);
                    }
                    p->s += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0) cp = 0xFFFD; /* no NULs inside C strings */
                if (cp < 0x80) {
                    buf[0] = (char)cp;
                    add = 1;
                } else if (cp < 0x800) {
                    buf[0] = (char)(0xC0 | (cp >> 6));
                    buf[1] = (char)(0x80 | (cp & 0x3F));
                    add = 2;
                } else if (cp < 0x10000) {
                    buf[0] = (char)(0xE0 | (cp >> 12));
                    buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    buf[2] = (char)(0x80 | (cp & 0x3F));
                    add = 3;
                } else {
                    buf[0] = (char)(0xF0 | (cp >> 18));
                    buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    buf[3] = (char)(0x80 | (cp & 0x3F));
                    add = 4;
                }
                break;
            default:
                free(out);
                return (jfail(p, "bad escape in string"), NULL);
            }
        }
        if (len + add + 1 > cap) {
            cap = cap * 2 + add;
            char *bigger = realloc(out, cap);
            if (!bigger) {
                free(out);
                return (jfail(p, "out of memory"), NULL);
            }
            out = bigger;
        }
        memcpy(out + len, buf, add);
        len += add;
    }
    out[len] = '\0';
    return out;
}

static jval *jnew(jparser *p, jtype t) {
    jval *v = calloc(1, sizeof *v);
    if (!v) jfail(p, "out of memory");
    else v->t = t;
    return v;
}

static int jpush(jparser *p, jval *parent, char *key, jval *item) {
    if ((parent->n & (parent->n - 1)) == 0) { /* grow at powers of two */
        size_t cap = parent->n ? parent->n * 2 : 1;
        jval **items = realloc(parent->items, cap * sizeof *items);
        if (!items) return jfail(p, "out of memory");
        parent->items = items;
        if (parent->t == J_OBJ) {
            char **keys = realloc(parent->keys, cap * sizeof *keys);
            if (!keys) return jfail(p, "out of memory");
            parent->keys = keys;
        }
    }
    parent->items[parent->n] = item;
    if (parent->t == J_OBJ) parent->keys[parent->n] = key;
    parent->n++;
    return 1;
}

static jval *jvalue(jparser *p, int depth);

static jval *jcontainer(jparser *p, int depth, int object) {
    jval *v = jnew(p, object ? J_OBJ : J_ARR);
    if (!v) return NULL;
    p->s++; /* the opening bracket */
    jws(p);
    char close = object ? '}' : ']';
    if (p->s < p->end && *p->s == close) {
        p->s++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        jws(p);
        if (object) {
            if (p->s >= p->end || *p->s != '"') {
                jfail(p, "expected a string key");
                goto bad;
            }
            if (!(key = jstring(p))) goto bad;
            jws(p);
            if (p->s >= p->end || *p->s != ':') {
                free(key);
                jfail(p, "expected ':' after a key");
                goto bad;
            }
            p->s++;
        }
        jval *item = jvalue(p, depth + 1);
        if (!item) {
            free(key);
            goto bad;
        }
        if (!jpush(p, v, key, item)) {
            free(key);
            jfree(item);
            goto bad;
        }
        jws(p);
        if (p->s < p->end && *p->s == ',') {
            p->s++;
            continue;
        }
        if (p->s < p->end && *p->s == close) {
            p->s++;
            return v;
        }
        jfail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
        goto bad;
    }
bad:
    jfree(v);
    return NULL;
}

static int jword(jparser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) >= n && memcmp(p->s, word, n) == 0) {
        p->s += n;
        return 1;
    }
    return 0;
}

static jval *jvalue(jparser *p, int depth) {
    if (depth > JSON_MAX_DEPTH) return (jfail(p, "nested too deeply"), NULL);
    jws(p);
    if (p->s >= p->end) return (jfail(p, "unexpected end of input"), NULL);
    char c = *p->s;
    if (c == '{' || c == '[') return jcontainer(p, depth, c == '{');
    if (c == '"') {
        char *s = jstring(p);
        if (!s) return NULL;
        jval *v = jnew(p, J_STR);
        if (!v) {
            free(s);
            return NULL;
        }
        v->str = s;
        return v;
    }
    if (jword(p, "true") || jword(p, "false")) {
        jval *v = jnew(p, J_BOOL);
        if (v) v->boolean = p->s[-1] == 'e' && p->s[-2] == 'u';
        return v;
    }
    if (jword(p, "null")) return jnew(p, J_NULL);
    if (c == '-' || (c >= '0' && c <= '9')) {
        /* strict JSON number syntax, then strtod on a bounded copy (the buffer is not NUL-terminated) */
        const char *s = p->s;
        if (s < p->end && *s == '-') s++;
        if (s >= p->end || *s < '0' || *s > '9') return (jfail(p, "bad number"), NULL);
        if (*s == '0') s++;
        else while (s < p->end && *s >= '0' && *s <= '9') s++;
        if (s < p->end && *s == '.') {
            s++;
            if (s >= p->end || *s < '0' || *s > '9') return (jfail(p, "bad number"), NULL);
            while (s < p->end && *s >= '0' && *s <= '9') s++;
        }
        if (s < p->end && (*s == 'e' || *s == 'E')) {
            s++;
            if (s < p->end && (*s == '+' || *s == '-')) s++;
            if (s >= p->end || *s < '0' || *s > '9') return (jfail(p, "bad number"), NULL);
            while (s < p->end && *s >= '0' && *s <= '9') s++;
        }
        char buf[64];
        size_t n = (size_t)(s - p->s);
        if (n >= sizeof buf) return (jfail(p, "number too long"), NULL);
        memcpy(buf, p->s, n);
        buf[n] = '\0';
        p->s = s;
        jval *v = jnew(p, J_NUM);
        if (v) v->num = strtod(buf, NULL);
        return v;
    }
    return (jfail(p, "unexpected character"), NULL);
}

static jval *jparse(const char *text, size_t len, char *err, size_t errlen) {
    jparser p = {text, text + len, NULL, 1};
    jval *v = jvalue(&p, 0);
    if (v) {
        jws(&p);
        if (p.s != p.end) {
            jfail(&p, "trailing characters after the value");
            jfree(v);
            v = NULL;
        }
    }
    if (!v) snprintf(err, errlen, "%s (line %zu)", p.err ? p.err : "bad JSON", p.line);
    return v;
}

static jval *jget(const jval *obj, const char *key) {
    if (!obj || obj->t != J_OBJ) return NULL;
    for (size_t i = obj->n; i-- > 0;) /* the last of duplicate keys wins, as in Python */
        if (strcmp(obj->keys[i], key) == 0) return obj->items[i];
    return NULL;
}

/* -- the spec, as the calls read it ------------------------------------------------------------------------ */
#define MAX_DEVICES 16
#define MAX_MIG 7 /* NVML_MAX_MIG_DEVICES... a GPU has at most 7 */
#define MAX_PROCS 128
#define NAME_LEN 96

typedef struct {
    int err; /* the NVML return for this field: NVML_SUCCESS when it has a value */
    double v;
} field;

typedef struct {
    unsigned pid;
    unsigned long long used; /* bytes; ~0ULL: not available */
    unsigned gi, ci;
    int has_sm;
    unsigned sm, mem;
} fproc;

typedef struct {
    int err; /* the list itself: an error name instead of a list */
    unsigned n;
    fproc p[MAX_PROCS];
} fprocs;

#define DEVICE_MAGIC 0x6e766d6cu

typedef struct fdev {
    unsigned magic;
    int index;           /* among its parent's (MIG) or the machine's devices */
    struct fdev *parent; /* a MIG device's GPU */
    int present;         /* in the spec as last read */
    int lost;
    char name[NAME_LEN], uuid[NAME_LEN];
    field mem_total, mem_used, mem_reserved, util_gpu, util_mem, temp, power, power_limit, enforced_limit, energy;
    field gi_id, ci_id;
    fprocs compute, graphics;
    int mig_err; /* NVML_SUCCESS: MIG capable (mig_current/mig_pending), else NOT_SUPPORTED */
    unsigned mig_current, mig_pending, mig_max;
    unsigned n_mig;
    struct fdev *mig[MAX_MIG];
} fdev;

typedef struct {
    int init_error;
    char driver[NAME_LEN], nvml[NAME_LEN];
    int cuda;
    unsigned count;
} fsystem;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int refcount;
static fsystem sys_info;
static fdev devices[MAX_DEVICES];
static fdev mig_devices[MAX_DEVICES][MAX_MIG];
static struct {
    int known;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} stamp;

static int error_named(const char *name) {
    for (size_t i = 0; i < N_ERRORS; i++)
        if (strcmp(ERRORS[i].name, name) == 0) return ERRORS[i].code;
    return -1;
}

/* A field from the spec: a number, an error name, or absent (NOT_SUPPORTED). */
static int read_field(const jval *obj, const char *key, double scale, field *out, char *err, size_t errlen) {
    const jval *v = jget(obj, key);
    out->v = 0;
    if (!v || v->t == J_NULL) {
        out->err = NVML_ERROR_NOT_SUPPORTED;
        return 1;
    }
    if (v->t == J_NUM) {
        if (v->num < 0) {
            snprintf(err, errlen, "\"%s\" is negative", key);
            return 0;
        }
        out->err = NVML_SUCCESS;
        out->v = v->num * scale;
        return 1;
    }
    if (v->t == J_STR) {
        int code = error_named(v->str);
        if (code > 0) {
            out->err = code;
            return 1;
        }
        snprintf(err, errlen, "\"%s\": \"%s\" is neither a number nor an NVML error name", key, v->str);
        return 0;
    }
    snprintf(err, errlen, "\"%s\" must be a number or an NVML error name", key);
    return 0;
}

static int read_text(const jval *obj, const char *key, const char *fallback, char *out, char *err, size_t errlen) {
    const jval *v = jget(obj, key);
    if (!v) {
        snprintf(out, NAME_LEN, "%s", fallback);
        return 1;
    }
    if (v->t != J_STR) {
        snprintf(err, errlen, "\"%s\" must be a string", key);
        return 0;
    }
    if (strlen(v->str) >= NAME_LEN) {
        snprintf(err, errlen, "\"%s\" is longer than %d bytes", key, NAME_LEN - 1);
        return 0;
    }
    snprintf(out, NAME_LEN, "%s", v->str);
    return 1;
}

static int read_uint(const jval *obj, const char *key, unsigned fallback, unsigned *out, char *err, size_t errlen) {
    const jval *v = jget(obj, key);
    if (!v) {
        *out = fallback;
        return 1;
    }
    if (v->t == J_BOOL) {
        *out = (unsigned)v->boolean;
        return 1;
    }
    if (v->t != J_NUM || v->num < 0 || v->num > 4294967295.0) {
        snprintf(err, errlen, "\"%s\" must be a whole number >= 0", key);
        return 0;
    }
    *out = (unsigned)v->num;
    return 1;
}

static int read_procs(const jval *obj, const char *key, fprocs *out, char *err, size_t errlen) {
    const jval *list = jget(obj, key);
    out->n = 0;
    out->err = NVML_SUCCESS;
    if (!list || list->t == J_NULL) return 1;
    if (list->t == J_STR) {
        int code = error_named(list->str);
        if (code <= 0) {
            snprintf(err, errlen, "\"%s\": \"%s\" is not an NVML error name", key, list->str);
            return 0;
        }
        out->err = code;
        return 1;
    }
    if (list->t != J_ARR) {
        snprintf(err, errlen, "\"%s\" must be a list of processes", key);
        return 0;
    }
    if (list->n > MAX_PROCS) {
        snprintf(err, errlen, "\"%s\": more than %d processes", key, MAX_PROCS);
        return 0;
    }
    for (size_t i = 0; i < list->n; i++) {
        const jval *p = list->items[i];
        fproc *f = &out->p[out->n];
        memset(f, 0, sizeof *f);
        if (p->t != J_OBJ) {
            snprintf(err, errlen, "\"%s\"[%zu] must be an object", key, i);
            return 0;
        }
        if (!jget(p, "pid")) {
            snprintf(err, errlen, "\"%s\"[%zu] has no \"pid\"", key, i);
            return 0;
        }
        if (!read_uint(p, "pid", 0, &f->pid, err, errlen) ||
            !read_uint(p, "gpu_instance_id", 0xFFFFFFFFu, &f->gi, err, errlen) ||
            !read_uint(p, "compute_instance_id", 0xFFFFFFFFu, &f->ci, err, errlen) ||
            !read_uint(p, "mem_util", 0, &f->mem, err, errlen))
            return 0;
        const jval *used = jget(p, "used_memory_mib");
        if (!used || (used->t == J_STR && strcmp(used->str, "n/a") == 0)) {
            f->used = ~0ULL;
        } else if (used->t == J_NUM && used->num >= 0) {
            f->used = (unsigned long long)(used->num * 1048576.0);
        } else {
            snprintf(err, errlen, "\"%s\"[%zu].used_memory_mib must be a number >= 0 or \"n/a\"", key, i);
            return 0;
        }
        if (jget(p, "sm_util")) {
            f->has_sm = 1;
            if (!read_uint(p, "sm_util", 0, &f->sm, err, errlen)) return 0;
        }
        out->n++;
    }
    return 1;
}

/* `migs`: where a GPU's MIG devices go (NULL for a MIG device itself). */
static int read_device(const jval *d, fdev *dev, int index, fdev *parent, fdev *migs, char *err, size_t errlen) {
    char fallback_name[NAME_LEN], fallback_uuid[NAME_LEN];
    if (d->t != J_OBJ) {
        snprintf(err, errlen, "a device must be an object");
        return 0;
    }
    if (parent) {
        snprintf(fallback_name, sizeof fallback_name, "%.80s MIG %d", parent->name, index);
        snprintf(fallback_uuid, sizeof fallback_uuid, "MIG-fake-%d-%d", parent->index, index);
    } else {
        snprintf(fallback_name, sizeof fallback_name, "Fake GPU %d", index);
        snprintf(fallback_uuid, sizeof fallback_uuid, "GPU-fake-%d", index);
    }
    const jval *lost = jget(d, "lost");
    if (lost && lost->t != J_BOOL) {
        snprintf(err, errlen, "\"lost\" must be true or false");
        return 0;
    }
    dev->lost = lost ? lost->boolean : 0;
    if (!read_text(d, "name", fallback_name, dev->name, err, errlen) ||
        !read_text(d, "uuid", fallback_uuid, dev->uuid, err, errlen))
        return 0;
    const double MIB = 1048576.0;
    if (!read_field(d, "memory_total_mib", MIB, &dev->mem_total, err, errlen) ||
        !read_field(d, "memory_used_mib", MIB, &dev->mem_used, err, errlen) ||
        !read_field(d, "memory_reserved_mib", MIB, &dev->mem_reserved, err, errlen) ||
        !read_field(d, "utilization_gpu", 1, &dev->util_gpu, err, errlen) ||
        !read_field(d, "utilization_memory", 1, &dev->util_mem, err, errlen) ||
        !read_field(d, "temperature_c", 1, &dev->temp, err, errlen) ||
        !read_field(d, "power_w", 1000, &dev->power, err, errlen) ||
        !read_field(d, "power_limit_w", 1000, &dev->power_limit, err, errlen) ||
        !read_field(d, "enforced_power_limit_w", 1000, &dev->enforced_limit, err, errlen) ||
        !read_field(d, "energy_mj", 1, &dev->energy, err, errlen) ||
        !read_field(d, "gpu_instance_id", 1, &dev->gi_id, err, errlen) ||
        !read_field(d, "compute_instance_id", 1, &dev->ci_id, err, errlen))
        return 0;
    if (!jget(d, "memory_used_mib")) dev->mem_used.err = NVML_SUCCESS; /* 0 used unless it says */
    if (!jget(d, "memory_reserved_mib")) dev->mem_reserved.err = NVML_SUCCESS;
    if (!jget(d, "enforced_power_limit_w")) dev->enforced_limit = dev->power_limit;
    if (!read_procs(d, "processes", &dev->compute, err, errlen) ||
        !read_procs(d, "graphics_processes", &dev->graphics, err, errlen))
        return 0;
    dev->mig_err = NVML_ERROR_NOT_SUPPORTED;
    dev->n_mig = 0;
    const jval *mig = jget(d, "mig");
    if (mig && migs) {
        if (mig->t != J_OBJ) {
            snprintf(err, errlen, "\"mig\" must be an object");
            return 0;
        }
        dev->mig_err = NVML_SUCCESS;
        if (!read_uint(mig, "current", 0, &dev->mig_current, err, errlen) ||
            !read_uint(mig, "pending", dev->mig_current, &dev->mig_pending, err, errlen) ||
            !read_uint(mig, "max_count", 7, &dev->mig_max, err, errlen))
            return 0;
        const jval *list = jget(mig, "devices");
        if (list && list->t != J_ARR) {
            snprintf(err, errlen, "\"mig\".\"devices\" must be a list");
            return 0;
        }
        size_t n = list ? list->n : 0;
        if (n > MAX_MIG) {
            snprintf(err, errlen, "more than %d MIG devices", MAX_MIG);
            return 0;
        }
        for (size_t i = 0; i < n; i++) {
            fdev *m = &migs[i];
            memset(m, 0, sizeof *m);
            m->magic = DEVICE_MAGIC;
            m->index = (int)i;
            m->parent = dev;
            m->present = 1;
            if (!read_device(list->items[i], m, (int)i, dev, NULL, err, errlen)) return 0;
            dev->mig[i] = m;
        }
        dev->n_mig = (unsigned)n;
    }
    return 1;
}

/* Read the spec into the tables; 0 (with `err`) when it cannot be read or is malformed. */
static int load_spec(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return 0;
    }
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    while (text) {
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (len < cap) break;
        if (cap > (64u << 20)) {
            fclose(f);
            free(text);
            snprintf(err, errlen, "%s is over 64 MiB", path);
            return 0;
        }
        char *bigger = realloc(text, cap * 2);
        if (!bigger) free(text);
        text = bigger;
        cap *= 2;
    }
    int failed = ferror(f);
    fclose(f);
    if (!text || failed) {
        free(text);
        snprintf(err, errlen, "cannot read %s", path);
        return 0;
    }
    char why[256];
    jval *root = jparse(text, len, why, sizeof why);
    free(text);
    if (!root) {
        snprintf(err, errlen, "%s is not valid JSON: %s", path, why);
        return 0;
    }
    /* parse into fresh tables, then swap in: a bad spec leaves the last good one */
    static fsystem new_sys;
    static fdev new_devices[MAX_DEVICES];
    static fdev new_migs[MAX_DEVICES][MAX_MIG];
    memset(&new_sys, 0, sizeof new_sys);
    int ok = 1;
    char detail[256] = "";
    const jval *devs = jget(root, "devices");
    if (root->t != J_OBJ) {
        snprintf(detail, sizeof detail, "the spec must be a JSON object");
        ok = 0;
    } else if (!devs || devs->t != J_ARR) {
        snprintf(detail, sizeof detail, "\"devices\" must be a list");
        ok = 0;
    } else if (devs->n > MAX_DEVICES) {
        snprintf(detail, sizeof detail, "more than %d devices", MAX_DEVICES);
        ok = 0;
    }
    if (ok) {
        const jval *ie = jget(root, "init_error");
        if (ie && (ie->t != J_STR || error_named(ie->str) <= 0)) {
            snprintf(detail, sizeof detail, "\"init_error\" must be an NVML error name");
            ok = 0;
        } else {
            new_sys.init_error = ie ? error_named(ie->str) : NVML_SUCCESS;
        }
    }
    ok = ok && read_text(root, "driver_version", "550.54.15", new_sys.driver, detail, sizeof detail);
    if (ok) {
        char fallback[NAME_LEN];
        snprintf(fallback, sizeof fallback, "12.%.80s", new_sys.driver);
        ok = read_text(root, "nvml_version", fallback, new_sys.nvml, detail, sizeof detail);
    }
    unsigned cuda = 0;
    ok = ok && read_uint(root, "cuda_driver_version", 12040, &cuda, detail, sizeof detail);
    new_sys.cuda = (int)cuda;
    for (size_t i = 0; ok && i < devs->n; i++) {
        fdev *d = &new_devices[i];
        memset(d, 0, sizeof *d);
        d->magic = DEVICE_MAGIC;
        d->index = (int)i;
        d->present = 1;
        if (!read_device(devs->items[i], d, (int)i, NULL, new_migs[i], detail, sizeof detail)) {
            char where[sizeof detail];
            snprintf(where, sizeof where, "devices[%zu]: %.200s", i, detail);
            memcpy(detail, where, sizeof detail);
            ok = 0;
        }
    }
    if (!ok) {
        jfree(root);
        snprintf(err, errlen, "%s: %s", path, detail);
        return 0;
    }
    new_sys.count = (unsigned)devs->n;
    jfree(root);
    /* swap in, keeping every handle's address: devices[i] and mig_devices[i][j] */
    sys_info = new_sys;
    for (unsigned i = 0; i < MAX_DEVICES; i++) {
        if (i < new_sys.count) {
            devices[i] = new_devices[i];
            for (unsigned j = 0; j < MAX_MIG; j++) {
                if (j < devices[i].n_mig) mig_devices[i][j] = new_migs[i][j];
                else mig_devices[i][j].present = 0;
                mig_devices[i][j].magic = DEVICE_MAGIC;
                mig_devices[i][j].parent = &devices[i];
                devices[i].mig[j] = &mig_devices[i][j];
            }
        } else {
            devices[i].present = 0;
            for (unsigned j = 0; j < MAX_MIG; j++) mig_devices[i][j].present = 0;
        }
    }
    return 1;
}

static int stat_spec(const char *path, struct stat *st) { return stat(path, st) == 0; }

static void remember(const struct stat *st) {
    stamp.known = 1;
    stamp.dev = st->st_dev;
    stamp.ino = st->st_ino;
    stamp.size = st->st_size;
    stamp.mtime = st->st_mtim;
}

/* Read the spec again if it changed since last read (or last tried). Called with the lock held. */
static void refresh(void) {
    const char *path = getenv("FAKE_NVML_SPEC");
    struct stat st;
    if (!path || !stat_spec(path, &st)) return; /* gone for now: keep what we have */
    if (stamp.known && st.st_dev == stamp.dev && st.st_ino == stamp.ino && st.st_size == stamp.size &&
        st.st_mtim.tv_sec == stamp.mtime.tv_sec && st.st_mtim.tv_nsec == stamp.mtime.tv_nsec)
        return;
    remember(&st);
    char err[512];
    if (!load_spec(path, err, sizeof err)) say("keeping the last good spec: %s", err);
}

/* -- entry points ------------------------------------------------------------------------------------------ */
typedef fdev *nvmlDevice_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
#define nvmlMemory_v2 ((unsigned)(sizeof(nvmlMemory_v2_t) | (2 << 24)))

typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_v2_t; /* and _v3_t: the same layout */

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

#define LOCKED_BEGIN pthread_mutex_lock(&lock)
#define RETURN(code)                   \
    do {                               \
        nvmlReturn_t ret_ = (code);    \
        pthread_mutex_unlock(&lock);   \
        return ret_;                   \
    } while (0)

/* The device behind a handle, with the lock held and the spec fresh; else returns the error. */
#define DEVICE(handle, dev)                                                                \
    fdev *dev;                                                                             \
    LOCKED_BEGIN;                                                                          \
    if (refcount <= 0) RETURN(NVML_ERROR_UNINITIALIZED);                                   \
    if (!(handle) || (handle)->magic != DEVICE_MAGIC) RETURN(NVML_ERROR_INVALID_ARGUMENT); \
    refresh();                                                                             \
    dev = (handle);                                                                        \
    if (!dev->present || dev->lost || (dev->parent && (!dev->parent->present || dev->parent->lost))) \
        RETURN(NVML_ERROR_GPU_IS_LOST)

static nvmlReturn_t do_init(void) {
    LOCKED_BEGIN;
    if (refcount > 0) {
        refcount++;
        RETURN(NVML_SUCCESS);
    }
    const char *path = getenv("FAKE_NVML_SPEC");
    if (!path || !*path) {
        say("FAKE_NVML_SPEC is not set: no driver to fake");
        RETURN(NVML_ERROR_DRIVER_NOT_LOADED);
    }
    struct stat st;
    char err[512];
    int have = stat_spec(path, &st);
    if (!load_spec(path, err, sizeof err)) {
        stamp.known = 0;
        say("nvmlInit fails: %s", err);
        RETURN(NVML_ERROR_UNKNOWN);
    }
    if (have) remember(&st);
    if (sys_info.init_error) RETURN(sys_info.init_error);
    refcount = 1;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlInit(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init();
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    LOCKED_BEGIN;
    if (refcount <= 0) RETURN(NVML_ERROR_UNINITIALIZED);
    refcount--;
    RETURN(NVML_SUCCESS);
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    for (size_t i = 0; i < N_ERRORS; i++)
        if (ERRORS[i].code == result) return ERRORS[i].message;
    return "Unknown Error";
}

static nvmlReturn_t copy_text(const char *text, char *out, unsigned int length) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, text, strlen(text) + 1);
    return NVML_SUCCESS;
}

#define SYSTEM_BEGIN                                     \
    LOCKED_BEGIN;                                        \
    if (refcount <= 0) RETURN(NVML_ERROR_UNINITIALIZED); \
    refresh()

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    SYSTEM_BEGIN;
    RETURN(copy_text(sys_info.driver, version, length));
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    SYSTEM_BEGIN;
    RETURN(copy_text(sys_info.nvml, version, length));
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    SYSTEM_BEGIN;
    if (!version) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *version = sys_info.cuda;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) { return nvmlSystemGetCudaDriverVersion(version); }

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    SYSTEM_BEGIN;
    if (!count) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *count = sys_info.count;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    SYSTEM_BEGIN;
    if (!device || index >= sys_info.count) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (devices[index].lost) RETURN(NVML_ERROR_GPU_IS_LOST);
    *device = &devices[index];
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    SYSTEM_BEGIN;
    if (!uuid || !device) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    for (unsigned i = 0; i < sys_info.count; i++) {
        fdev *d = &devices[i];
        if (strcmp(d->uuid, uuid) == 0) {
            if (d->lost) RETURN(NVML_ERROR_GPU_IS_LOST);
            *device = d;
            RETURN(NVML_SUCCESS);
        }
        for (unsigned j = 0; j < d->n_mig; j++)
            if (strcmp(d->mig[j]->uuid, uuid) == 0) {
                if (d->lost || d->mig[j]->lost) RETURN(NVML_ERROR_GPU_IS_LOST);
                *device = d->mig[j];
                RETURN(NVML_SUCCESS);
            }
    }
    RETURN(NVML_ERROR_NOT_FOUND);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    DEVICE(device, d);
    if (!index) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (d->parent) RETURN(NVML_ERROR_NOT_SUPPORTED);
    *index = (unsigned)d->index;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    DEVICE(device, d);
    RETURN(copy_text(d->name, name, length));
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    DEVICE(device, d);
    RETURN(copy_text(d->uuid, uuid, length));
}

/* the first error among these fields, else NVML_SUCCESS */
static int first_error(const field *a, const field *b, const field *c) {
    if (a && a->err) return a->err;
    if (b && b->err) return b->err;
    if (c && c->err) return c->err;
    return NVML_SUCCESS;
}

static unsigned long long bytes(double v) { return (unsigned long long)v; }

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    DEVICE(device, d);
    if (!memory) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    int e = first_error(&d->mem_total, &d->mem_used, &d->mem_reserved);
    if (e) RETURN(e);
    unsigned long long total = bytes(d->mem_total.v), used = bytes(d->mem_used.v) + bytes(d->mem_reserved.v);
    memory->total = total;
    memory->used = used;
    memory->free = used < total ? total - used : 0;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    DEVICE(device, d);
    if (!memory) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (memory->version != nvmlMemory_v2) RETURN(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    int e = first_error(&d->mem_total, &d->mem_used, &d->mem_reserved);
    if (e) RETURN(e);
    unsigned long long total = bytes(d->mem_total.v), used = bytes(d->mem_used.v), reserved = bytes(d->mem_reserved.v);
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = used + reserved < total ? total - used - reserved : 0;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    DEVICE(device, d);
    if (!utilization) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    int e = first_error(&d->util_gpu, &d->util_mem, NULL);
    if (e) RETURN(e);
    utilization->gpu = (unsigned)d->util_gpu.v;
    utilization->memory = (unsigned)d->util_mem.v;
    RETURN(NVML_SUCCESS);
}

static nvmlReturn_t read_uint_field(const field *f, unsigned int *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (f->err) return f->err;
    *out = (unsigned)(f->v + 0.5);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensorType, unsigned int *temp) {
    DEVICE(device, d);
    if (sensorType != 0) RETURN(NVML_ERROR_INVALID_ARGUMENT); /* NVML_TEMPERATURE_GPU is the only sensor */
    RETURN(read_uint_field(&d->temp, temp));
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    DEVICE(device, d);
    RETURN(read_uint_field(&d->power, power));
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE(device, d);
    RETURN(read_uint_field(&d->enforced_limit, limit));
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE(device, d);
    RETURN(read_uint_field(&d->power_limit, limit));
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    DEVICE(device, d);
    if (!energy) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (d->energy.err) RETURN(d->energy.err);
    *energy = (unsigned long long)d->energy.v;
    RETURN(NVML_SUCCESS);
}

/* The two-call protocol: too small a buffer (or none) gets the count needed and INSUFFICIENT_SIZE. */
static nvmlReturn_t list_procs(const fprocs *list, unsigned int *count, void *infos, int version) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (list->err) return list->err;
    if (*count < list->n || (!infos && list->n > 0)) {
        *count = list->n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned i = 0; i < list->n; i++) {
        const fproc *p = &list->p[i];
        if (version == 1) {
            nvmlProcessInfo_v1_t *out = (nvmlProcessInfo_v1_t *)infos + i;
            out->pid = p->pid;
            out->usedGpuMemory = p->used;
        } else {
            nvmlProcessInfo_v2_t *out = (nvmlProcessInfo_v2_t *)infos + i;
            out->pid = p->pid;
            out->usedGpuMemory = p->used;
            out->gpuInstanceId = p->gi;
            out->computeInstanceId = p->ci;
        }
    }
    *count = list->n;
    return NVML_SUCCESS;
}

#define PROCESS_CALL(fn, which, version)                                               \
    EXPORT nvmlReturn_t fn(nvmlDevice_t device, unsigned int *count, void *infos) {  \
        DEVICE(device, d);                                                             \
        RETURN(list_procs(&d->which, count, infos, version));                          \
    }

PROCESS_CALL(nvmlDeviceGetComputeRunningProcesses, compute, 1)
PROCESS_CALL(nvmlDeviceGetComputeRunningProcesses_v2, compute, 2)
PROCESS_CALL(nvmlDeviceGetComputeRunningProcesses_v3, compute, 3)
PROCESS_CALL(nvmlDeviceGetGraphicsRunningProcesses, graphics, 1)
PROCESS_CALL(nvmlDeviceGetGraphicsRunningProcesses_v2, graphics, 2)
PROCESS_CALL(nvmlDeviceGetGraphicsRunningProcesses_v3, graphics, 3)

static const fprocs NO_PROCS;
EXPORT nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count, void *infos) {
    DEVICE(device, d);
    (void)d;
    RETURN(list_procs(&NO_PROCS, count, infos, 3));
}

static unsigned long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

/* Samples of the processes the spec gives an "sm_util", all taken now (later than any timestamp asked
 * about); none at all is NOT_FOUND, as the driver says when nothing was sampled since `lastSeenTimeStamp`. */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device, nvmlProcessUtilizationSample_t *utilization,
                                                    unsigned int *processSamplesCount,
                                                    unsigned long long lastSeenTimeStamp) {
    DEVICE(device, d);
    if (!processSamplesCount) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (d->compute.err) RETURN(d->compute.err);
    unsigned n = 0;
    for (unsigned i = 0; i < d->compute.n; i++) n += d->compute.p[i].has_sm;
    if (n == 0) RETURN(NVML_ERROR_NOT_FOUND);
    if (!utilization || *processSamplesCount < n) {
        *processSamplesCount = n;
        RETURN(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    unsigned long long at = now_us();
    if (at <= lastSeenTimeStamp) at = lastSeenTimeStamp + 1;
    unsigned k = 0;
    for (unsigned i = 0; i < d->compute.n; i++) {
        const fproc *p = &d->compute.p[i];
        if (!p->has_sm) continue;
        nvmlProcessUtilizationSample_t *s = &utilization[k++];
        s->pid = p->pid;
        s->timeStamp = at;
        s->smUtil = p->sm;
        s->memUtil = p->mem;
        s->encUtil = 0;
        s->decUtil = 0;
    }
    *processSamplesCount = k;
    RETURN(NVML_SUCCESS);
}

/* -- MIG ------------------------------------------------------------------------------------------------- */
EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
    DEVICE(device, d);
    if (!currentMode || !pendingMode) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (d->parent) RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (d->mig_err) RETURN(d->mig_err);
    *currentMode = d->mig_current;
    *pendingMode = d->mig_pending;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    DEVICE(device, d);
    if (!count) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (d->parent) RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (d->mig_err) RETURN(d->mig_err);
    *count = d->mig_max;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index, nvmlDevice_t *migDevice) {
    DEVICE(device, d);
    if (!migDevice) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (d->parent) RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (d->mig_err) RETURN(d->mig_err);
    if (!d->mig_current) RETURN(NVML_ERROR_INVALID_ARGUMENT); /* MIG is off */
    if (index >= d->mig_max) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (index >= d->n_mig) RETURN(NVML_ERROR_NOT_FOUND);
    if (d->mig[index]->lost) RETURN(NVML_ERROR_GPU_IS_LOST);
    *migDevice = d->mig[index];
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
    DEVICE(device, d);
    if (!isMigDevice) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *isMigDevice = d->parent != NULL;
    RETURN(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device) {
    DEVICE(migDevice, d);
    if (!device) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (!d->parent) RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *device = d->parent;
    RETURN(NVML_SUCCESS);
}

static nvmlReturn_t instance_id(fdev *d, const field *f, unsigned int *id) {
    if (!id) return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->parent) return NVML_ERROR_NOT_SUPPORTED;
    if (f->err) {
        *id = (unsigned)d->index;
        return NVML_SUCCESS;
    }
    *id = (unsigned)f->v;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    DEVICE(device, d);
    RETURN(instance_id(d, &d->gi_id, id));
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    DEVICE(device, d);
    if (id && d->parent && d->ci_id.err) {
        *id = 0;
        RETURN(NVML_SUCCESS);
    }
    RETURN(instance_id(d, &d->ci_id, id));
}
