/* Simhash fingerprints, bit-identical to the `simhash` package.

   promptmill.fingerprints computes the same values with numpy; this optional
   extension does the three costly parts in one pass per text: tokenising
   (the package's regex [\w\u4e00-\u9fcc]+ over the folded text; ASCII texts,
   nearly all prompts, by one table lookup per byte), md5 of each distinct
   feature once per call (a hash table keeps the value) and the bit vote (a bit
   is set when more than half of the text's features have it). Unicode folding
   (NFKC, case folding) stays in Python. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- MD5 (RFC 1321) -------------------------------------------------- */

static uint32_t md5_sine[64]; /* T[i] = floor(2^32 * |sin(i + 1)|), filled at import */

#define F(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define G(x, y, z) (((x) & (z)) | ((y) & ~(z)))
#define H(x, y, z) ((x) ^ (y) ^ (z))
#define I(x, y, z) ((y) ^ ((x) | ~(z)))
#define ROTATE(x, s) (((x) << (s)) | ((x) >> (32 - (s))))
#define STEP(f, a, b, c, d, k, s, i) a = b + ROTATE(a + f(b, c, d) + x[k] + md5_sine[i], s)
#define FOUR(f, i, k0, k1, k2, k3, s0, s1, s2, s3) \
    STEP(f, a, b, c, d, k0, s0, i);                \
    STEP(f, d, a, b, c, k1, s1, i + 1);            \
    STEP(f, c, d, a, b, k2, s2, i + 2);            \
    STEP(f, b, c, d, a, k3, s3, i + 3)

static void md5_block(uint32_t state[4], const unsigned char *block)
{
    uint32_t x[16];
    for (int j = 0; j < 16; j++) {
        const unsigned char *p = block + 4 * j;
        x[j] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    FOUR(F, 0, 0, 1, 2, 3, 7, 12, 17, 22);
    FOUR(F, 4, 4, 5, 6, 7, 7, 12, 17, 22);
    FOUR(F, 8, 8, 9, 10, 11, 7, 12, 17, 22);
    FOUR(F, 12, 12, 13, 14, 15, 7, 12, 17, 22);
    FOUR(G, 16, 1, 6, 11, 0, 5, 9, 14, 20);
    FOUR(G, 20, 5, 10, 15, 4, 5, 9, 14, 20);
    FOUR(G, 24, 9, 14, 3, 8, 5, 9, 14, 20);
    FOUR(G, 28, 13, 2, 7, 12, 5, 9, 14, 20);
    FOUR(H, 32, 5, 8, 11, 14, 4, 11, 16, 23);
    FOUR(H, 36, 1, 4, 7, 10, 4, 11, 16, 23);
    FOUR(H, 40, 13, 0, 3, 6, 4, 11, 16, 23);
    FOUR(H, 44, 9, 12, 15, 2, 4, 11, 16, 23);
    FOUR(I, 48, 0, 7, 14, 5, 6, 10, 15, 21);
    FOUR(I, 52, 12, 3, 10, 1, 6, 10, 15, 21);
    FOUR(I, 56, 8, 15, 6, 13, 6, 10, 15, 21);
    FOUR(I, 60, 4, 11, 2, 9, 6, 10, 15, 21);
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
}

static uint32_t byte_swap(uint32_t v)
{
    return (v >> 24) | ((v >> 8) & 0xFF00) | ((v << 8) & 0xFF0000) | (v << 24);
}

/* The package's feature hash: the last 8 bytes of the md5 digest, read big-endian.
   Digest bytes 8..15 are state words C and D, each stored little-endian. */
static uint64_t md5_last_8_bytes(const unsigned char *message, size_t length)
{
    uint32_t state[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    size_t done = 0;
    for (; length - done >= 64; done += 64)
        md5_block(state, message + done);
    unsigned char tail[128] = {0};
    size_t rest = length - done;
    memcpy(tail, message + done, rest);
    tail[rest] = 0x80;
    size_t tail_length = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)length * 8;
    for (int j = 0; j < 8; j++)
        tail[tail_length - 8 + j] = (unsigned char)(bits >> (8 * j));
    md5_block(state, tail);
    if (tail_length == 128)
        md5_block(state, tail + 64);
    return (uint64_t)byte_swap(state[2]) << 32 | byte_swap(state[3]);
}

/* ---- distinct features of one call and their hashes ------------------- */

/* Features of up to INLINE_BYTES bytes (nearly all) are kept in the table's slots,
   zero-padded, and compared as integers: no feature holds a 0 byte (they are made of
   letters and spaces), so the padding tells the length. Longer ones go to an arena. */
#define INLINE_WORDS 2
#define INLINE_BYTES (8 * INLINE_WORDS)
#define LONG_MARK (~(uint64_t)0) /* last word of a long feature's slot: 0xFF is never in UTF-8 */
#define TAKEN ((uint64_t)1 << 63) /* set in every key: a slot with key 0 is empty */

/* A feature of the current text. */
typedef struct {
    const unsigned char *bytes;
    size_t length;
    uint64_t key;
    uint64_t words[INLINE_WORDS];
} Feature;

/* A feature's key hash, its md5 value and its bytes (or, when long, words[0] is
   where they are in the arena: their length then the bytes). */
typedef struct {
    uint64_t key;
    uint64_t value;
    uint64_t words[INLINE_WORDS];
} Slot;

typedef struct {
    Slot *slots;
    size_t capacity, used;
    Py_ssize_t *last_text; /* per slot, the last text it was counted for (wordset only) */
    unsigned char *arena;
    size_t arena_size, arena_capacity;
} Table;

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

/* Eight bytes as a little-endian integer (one load on most machines). */
static inline uint64_t load_word(const unsigned char *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

/* The first n (< 8) bytes of p as a little-endian integer. */
static uint64_t load_bytes(const unsigned char *p, size_t n)
{
    uint64_t word = 0;
    for (size_t j = 0; j < n; j++)
        word |= (uint64_t)p[j] << (8 * j);
    return word;
}

/* A feature at `bytes`; the INLINE_BYTES bytes from there must be readable (buffers have
   SLACK bytes at their end), those past `length` are masked off. */
static inline void feature_set(Feature *f, const unsigned char *bytes, size_t length)
{
    f->bytes = bytes;
    f->length = length;
    if (length <= INLINE_BYTES) {
        uint64_t h = length;
        for (size_t w = 0; w < INLINE_WORDS; w++) {
            size_t valid = length > 8 * w ? length - 8 * w : 0;
            uint64_t mask = valid >= 8 ? ~(uint64_t)0 : ((uint64_t)1 << (8 * valid)) - 1;
            f->words[w] = load_word(bytes + 8 * w) & mask;
            h ^= f->words[w] * (0x9e3779b97f4a7c15ULL + 2 * w);
        }
        f->key = mix(h) | TAKEN;
        return;
    }
    uint64_t h = length;
    size_t done = 0;
    for (; length - done >= 8; done += 8)
        h = mix(h ^ load_word(bytes + done));
    f->key = mix(h ^ load_bytes(bytes + done, length - done)) | TAKEN;
}

static int table_init(Table *t, int track_texts)
{
    memset(t, 0, sizeof *t);
    t->capacity = 1 << 12;
    t->slots = PyMem_Calloc(t->capacity, sizeof(Slot));
    if (track_texts)
        t->last_text = PyMem_Malloc(t->capacity * sizeof(Py_ssize_t));
    return t->slots && (t->last_text || !track_texts) ? 0 : -1;
}

static void table_free(Table *t)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->last_text);
    PyMem_Free(t->arena);
}

/* Room for `more` new features without passing three quarters full. */
static int table_reserve(Table *t, size_t more)
{
    if ((t->used + more) * 4 <= t->capacity * 3)
        return 0;
    size_t capacity = t->capacity;
    while ((t->used + more) * 4 > capacity * 3)
        capacity *= 2;
    Slot *slots = PyMem_Calloc(capacity, sizeof(Slot));
    Py_ssize_t *last_text = t->last_text ? PyMem_Malloc(capacity * sizeof(Py_ssize_t)) : NULL;
    if (!slots || (t->last_text && !last_text)) {
        PyMem_Free(slots);
        PyMem_Free(last_text);
        return -1;
    }
    size_t mask = capacity - 1;
    for (size_t i = 0; i < t->capacity; i++) {
        if (!t->slots[i].key)
            continue;
        size_t j = t->slots[i].key & mask;
        while (slots[j].key)
            j = (j + 1) & mask;
        slots[j] = t->slots[i];
        if (last_text)
            last_text[j] = t->last_text[i];
    }
    PyMem_Free(t->slots);
    PyMem_Free(t->last_text);
    t->slots = slots;
    t->last_text = last_text;
    t->capacity = capacity;
    return 0;
}

static inline void slot_prefetch(const Table *t, const Feature *f)
{
#if defined(__GNUC__)
    __builtin_prefetch(&t->slots[f->key & (t->capacity - 1)]);
#else
    (void)t;
    (void)f;
#endif
}

static int slot_holds(const Table *t, const Slot *slot, const Feature *f)
{
    if (slot->key != f->key)
        return 0;
    if (f->length <= INLINE_BYTES) {
        for (int w = 0; w < INLINE_WORDS; w++)
            if (slot->words[w] != f->words[w])
                return 0;
        return 1;
    }
    if (slot->words[INLINE_WORDS - 1] != LONG_MARK)
        return 0;
    size_t length;
    memcpy(&length, t->arena + slot->words[0], sizeof length);
    return length == f->length && memcmp(t->arena + slot->words[0] + sizeof length, f->bytes, length) == 0;
}

/* The index of a feature's slot, added (and md5-hashed) on first sight; -1 when out of
   memory. The caller has reserved room for it. */
static Py_ssize_t feature_slot(Table *t, const Feature *f)
{
    size_t mask = t->capacity - 1, i = f->key & mask;
    for (; t->slots[i].key; i = (i + 1) & mask)
        if (slot_holds(t, &t->slots[i], f))
            return (Py_ssize_t)i;
    Slot *slot = &t->slots[i];
    if (f->length <= INLINE_BYTES) {
        memcpy(slot->words, f->words, sizeof slot->words);
    } else {
        size_t needed = t->arena_size + sizeof f->length + f->length;
        if (needed > t->arena_capacity) {
            size_t capacity = t->arena_capacity ? t->arena_capacity : 1 << 16;
            while (capacity < needed)
                capacity *= 2;
            unsigned char *arena = PyMem_Realloc(t->arena, capacity);
            if (!arena)
                return -1;
            t->arena = arena;
            t->arena_capacity = capacity;
        }
        memcpy(t->arena + t->arena_size, &f->length, sizeof f->length);
        memcpy(t->arena + t->arena_size + sizeof f->length, f->bytes, f->length);
        slot->words[0] = t->arena_size;
        slot->words[INLINE_WORDS - 1] = LONG_MARK;
        t->arena_size = needed;
    }
    slot->key = f->key;
    slot->value = md5_last_8_bytes(f->bytes, f->length);
    if (t->last_text)
        t->last_text[i] = -1;
    t->used++;
    return (Py_ssize_t)i;
}

/* ---- the vote ---------------------------------------------------------- */

/* spread[v]: byte k is bit k of v. Adding spread[byte b of a hash] to lane b counts
   eight bits at once in 8-bit lanes, emptied into the totals before they can overflow. */
static uint64_t spread[256];

typedef struct {
    uint64_t lanes[8];
    int64_t totals[64]; /* in use once the lanes were emptied */
    int64_t features;
    int in_lanes, emptied;
} Vote;

static void vote_start(Vote *v)
{
    memset(v->lanes, 0, sizeof v->lanes);
    v->features = 0;
    v->in_lanes = 0;
    v->emptied = 0;
}

static void vote_empty_lanes(Vote *v)
{
    if (!v->emptied)
        memset(v->totals, 0, sizeof v->totals);
    v->emptied = 1;
    for (int b = 0; b < 8; b++) {
        for (int k = 0; k < 8; k++)
            v->totals[8 * b + k] += (v->lanes[b] >> (8 * k)) & 0xFF;
        v->lanes[b] = 0;
    }
    v->in_lanes = 0;
}

static inline void vote_add(Vote *v, uint64_t hash)
{
    for (int b = 0; b < 8; b++)
        v->lanes[b] += spread[(hash >> (8 * b)) & 0xFF];
    v->features++;
    if (++v->in_lanes == 255)
        vote_empty_lanes(v);
}

/* Bit j is set when more than half of the features have it, as the package decides. */
static uint64_t vote_result(Vote *v)
{
    uint64_t value = 0;
    if (v->emptied) {
        vote_empty_lanes(v);
        for (int j = 0; j < 64; j++)
            if (2 * v->totals[j] > v->features)
                value |= (uint64_t)1 << j;
        return value;
    }
    for (int j = 0; j < 64; j++)
        if (2 * (int64_t)((v->lanes[j / 8] >> (8 * (j % 8))) & 0xFF) > v->features)
            value |= (uint64_t)1 << j;
    return value;
}

/* ---- tokenising and features ------------------------------------------ */

/* The package's letters in ASCII ([A-Za-z0-9_]), lower-cased; 0 for separators. */
static unsigned char letter[256];

/* Beyond ASCII, the package's regex [\w\u4e00-\u9fcc] (\w: alphanumeric or '_', by this
   interpreter's Unicode database, as its `re` module decides). */
static inline int is_unicode_letter(Py_UCS4 c)
{
    return Py_UNICODE_ISALNUM(c) || (c >= 0x4e00 && c <= 0x9fcc);
}

enum Kind { WORD, WORDSET, WORD2, CHAR4 };

#define SLACK INLINE_BYTES
#define UTF8_MAX 4 /* bytes per character */

/* Working memory for one text of up to `capacity` characters, reused from text to text.
   A text of n characters has at most n letters (4n bytes of UTF-8), n words and n
   features; its pairs take at most twice its letters plus a space per pair. */
typedef struct {
    unsigned char *letters; /* the text's letters in UTF-8, its words joined without separators */
    size_t *word_ends;      /* end of each word in `letters` */
    size_t *char_starts;    /* start of each letter in `letters` (texts beyond ASCII) */
    unsigned char *pairs;   /* "first second" of each word2 pair */
    Feature *features;
    size_t capacity;
} Buffers;

static int buffers_fit(Buffers *buf, size_t length)
{
    if (length + 1 <= buf->capacity)
        return 0;
    size_t capacity = buf->capacity ? buf->capacity : 1024;
    while (capacity < length + 1)
        capacity *= 2;
    void *letters = PyMem_Realloc(buf->letters, UTF8_MAX * capacity + SLACK);
    if (letters)
        buf->letters = letters;
    void *word_ends = PyMem_Realloc(buf->word_ends, capacity * sizeof(size_t));
    if (word_ends)
        buf->word_ends = word_ends;
    void *char_starts = PyMem_Realloc(buf->char_starts, capacity * sizeof(size_t));
    if (char_starts)
        buf->char_starts = char_starts;
    void *pairs = PyMem_Realloc(buf->pairs, 3 * UTF8_MAX * capacity + SLACK);
    if (pairs)
        buf->pairs = pairs;
    void *features = PyMem_Realloc(buf->features, capacity * sizeof(Feature));
    if (features)
        buf->features = features;
    if (!letters || !word_ends || !char_starts || !pairs || !features)
        return -1;
    buf->capacity = capacity;
    return 0;
}

static void buffers_free(Buffers *buf)
{
    PyMem_Free(buf->letters);
    PyMem_Free(buf->word_ends);
    PyMem_Free(buf->char_starts);
    PyMem_Free(buf->pairs);
    PyMem_Free(buf->features);
}

/* Letters and word ends of an ASCII text; returns the letters' size. */
static size_t split_ascii(Buffers *buf, const unsigned char *text, size_t length, size_t *words_out)
{
    unsigned char *letters = buf->letters;
    size_t *word_ends = buf->word_ends;
    /* Without branches: every character is written, only letters advance `size`, and a
       separator after a letter closes a word. */
    size_t size = 0, words = 0, in_word = 0;
    for (size_t j = 0; j < length; j++) {
        unsigned char c = letter[text[j]];
        size_t is_letter = c != 0;
        letters[size] = c;
        word_ends[words] = size;
        words += in_word & !is_letter;
        size += is_letter;
        in_word = is_letter;
    }
    if (in_word)
        word_ends[words++] = size;
    *words_out = words;
    return size;
}

/* Letters (in UTF-8), their starts and the word ends of any text; returns the letters' size. */
static size_t split_unicode(Buffers *buf, int kind, const void *data, size_t length, size_t *words_out,
                            size_t *chars_out)
{
    unsigned char *letters = buf->letters;
    size_t size = 0, words = 0, chars = 0;
    int in_word = 0;
    for (size_t j = 0; j < length; j++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, j);
        int is_letter = c < 128 ? letter[c] != 0 : is_unicode_letter(c);
        if (!is_letter) {
            if (in_word)
                buf->word_ends[words++] = size;
            in_word = 0;
            continue;
        }
        in_word = 1;
        buf->char_starts[chars++] = size;
        if (c < 0x80) {
            letters[size++] = letter[c];
        } else if (c < 0x800) {
            letters[size++] = (unsigned char)(0xC0 | c >> 6);
            letters[size++] = (unsigned char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            letters[size++] = (unsigned char)(0xE0 | c >> 12);
            letters[size++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            letters[size++] = (unsigned char)(0x80 | (c & 0x3F));
        } else {
            letters[size++] = (unsigned char)(0xF0 | c >> 18);
            letters[size++] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
            letters[size++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            letters[size++] = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    if (in_word)
        buf->word_ends[words++] = size;
    *words_out = words;
    *chars_out = chars;
    return size;
}

/* The features of one text into buf->features, as FEATURES[kind] in Python makes them;
   returns how many. */
static size_t text_features(Buffers *buf, enum Kind kind, PyObject *text)
{
    size_t length = (size_t)PyUnicode_GET_LENGTH(text), size, words, chars;
    int ascii = PyUnicode_IS_ASCII(text);
    if (ascii)
        chars = size = split_ascii(buf, PyUnicode_1BYTE_DATA(text), length, &words);
    else
        size = split_unicode(buf, PyUnicode_KIND(text), PyUnicode_DATA(text), length, &words, &chars);
    const unsigned char *letters = buf->letters;
    const size_t *word_ends = buf->word_ends;
    Feature *features = buf->features;
    size_t count = 0;
    if (kind == CHAR4) {
        /* Windows of four characters; content shorter than that is one feature. */
        if (chars < 4)
            feature_set(&features[count++], letters, size);
        else if (ascii)
            for (size_t j = 0; j + 4 <= size; j++)
                feature_set(&features[count++], letters + j, 4);
        else
            for (size_t j = 0; j + 4 <= chars; j++) {
                size_t start = buf->char_starts[j], end = j + 4 < chars ? buf->char_starts[j + 4] : size;
                feature_set(&features[count++], letters + start, end - start);
            }
    } else if (kind == WORD2 && words >= 2) {
        unsigned char *pair = buf->pairs;
        size_t start = 0, middle = word_ends[0];
        for (size_t w = 1; w < words; w++) {
            size_t end = word_ends[w];
            memcpy(pair, letters + start, middle - start);
            pair[middle - start] = ' ';
            memcpy(pair + middle - start + 1, letters + middle, end - middle);
            feature_set(&features[count++], pair, end - start + 1);
            pair += end - start + 1;
            start = middle;
            middle = end;
        }
    } else {
        size_t start = 0;
        for (size_t w = 0; w < words; w++) {
            feature_set(&features[count++], letters + start, word_ends[w] - start);
            start = word_ends[w];
        }
    }
    return count;
}

/* Fingerprint one text into *out; -1 when out of memory. */
static int fingerprint_text(Table *table, Buffers *buf, enum Kind kind, Py_ssize_t index, PyObject *text,
                            uint64_t *out)
{
    if (buffers_fit(buf, (size_t)PyUnicode_GET_LENGTH(text)) < 0)
        return -1;
    size_t count = text_features(buf, kind, text);
    if (table_reserve(table, count) < 0)
        return -1;
    /* All the slots are requested from memory first, then read: the misses overlap. */
    for (size_t j = 0; j < count; j++)
        slot_prefetch(table, &buf->features[j]);
    Vote vote;
    vote_start(&vote);
    for (size_t j = 0; j < count; j++) {
        Py_ssize_t slot = feature_slot(table, &buf->features[j]);
        if (slot < 0)
            return -1;
        if (kind == WORDSET) {
            if (table->last_text[slot] == index)
                continue;
            table->last_text[slot] = index;
        }
        vote_add(&vote, table->slots[slot].value);
    }
    *out = vote_result(&vote);
    return 0;
}

PyDoc_STRVAR(fingerprints_folded_doc,
             "fingerprints_folded(texts, features) -> bytes\n\n"
             "64-bit simhash of each text over the named features ('word', 'wordset', 'word2' or\n"
             "'char4'), as native uint64 values, one per text. Texts must be folded as\n"
             "promptmill.fingerprints.fold does, except that ASCII capitals are lower-cased here:\n"
             "an ASCII text may be passed as it is.");

/* 0 when TEXT is a str ready to read; -1 with TypeError (or the ready failure) set. */
static int text_ready(PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "texts must be str, not %.100s", Py_TYPE(text)->tp_name);
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0)
        return -1;
#endif
    return 0;
}

static PyObject *fingerprints_folded(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *texts;
    const char *name;
    if (!PyArg_ParseTuple(args, "Os:fingerprints_folded", &texts, &name))
        return NULL;
    enum Kind kind;
    if (strcmp(name, "word") == 0)
        kind = WORD;
    else if (strcmp(name, "wordset") == 0)
        kind = WORDSET;
    else if (strcmp(name, "word2") == 0)
        kind = WORD2;
    else if (strcmp(name, "char4") == 0)
        kind = CHAR4;
    else
        return PyErr_Format(PyExc_ValueError, "unknown features %R", PyTuple_GET_ITEM(args, 1));

    PyObject *sequence = PySequence_Fast(texts, "texts must be a sequence of str");
    if (!sequence)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    PyObject *values = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(uint64_t));
    Table table = {0};
    Buffers buffers = {0};
    if (!values)
        goto done;
    if (table_init(&table, kind == WORDSET) < 0) {
        PyErr_NoMemory();
        goto failed;
    }
    uint64_t *out = (uint64_t *)PyBytes_AS_STRING(values);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *text = PySequence_Fast_GET_ITEM(sequence, i);
#if defined(__GNUC__)
        if (i + 2 < count) /* the next texts' headers and first characters, ahead of use */
            __builtin_prefetch((char *)PySequence_Fast_GET_ITEM(sequence, i + 2) + 64);
        if (i + 1 < count)
            __builtin_prefetch(PySequence_Fast_GET_ITEM(sequence, i + 1));
#endif
        if (text_ready(text) < 0)
            goto failed;
        if (fingerprint_text(&table, &buffers, kind, i, text, &out[i]) < 0) {
            PyErr_NoMemory();
            goto failed;
        }
    }
    goto done;
failed:
    Py_CLEAR(values);
done:
    table_free(&table);
    buffers_free(&buffers);
    Py_DECREF(sequence);
    return values;
}

/* ---- MinHash signatures for the cascade --------------------------------- */

static int contains(const uint64_t *sorted, Py_ssize_t n, uint64_t value)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < value)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && sorted[lo] == value;
}

static int compare_words(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

PyDoc_STRVAR(word_sets_folded_doc,
             "word_sets_folded(texts, ignored) -> (counts, hashes)\n\n"
             "Each text's distinct words (as for 'wordset', hashed as the simhash package hashes a\n"
             "feature) less those whose hash is in `ignored` (sorted native uint64 bytes): the number\n"
             "of words of each text (native int64) and their hashes (native uint64, text after text,\n"
             "ascending within a text).");

static PyObject *word_sets_folded(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *texts;
    Py_buffer ignored;
    if (!PyArg_ParseTuple(args, "Oy*:word_sets_folded", &texts, &ignored))
        return NULL;
    PyObject *result = NULL, *counts = NULL, *hashes = NULL;
    Table table = {0};
    Buffers buffers = {0};
    uint64_t *words = NULL;
    size_t words_used = 0, words_capacity = 0;
    PyObject *sequence = PySequence_Fast(texts, "texts must be a sequence of str");
    if (!sequence)
        goto released;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    const uint64_t *skip = ignored.buf;
    Py_ssize_t skipped = ignored.len / (Py_ssize_t)sizeof(uint64_t);
    counts = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    if (!counts)
        goto done;
    if (table_init(&table, 1) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t *sizes = (int64_t *)PyBytes_AS_STRING(counts);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *text = PySequence_Fast_GET_ITEM(sequence, i);
        if (text_ready(text) < 0)
            goto done;
        if (buffers_fit(&buffers, (size_t)PyUnicode_GET_LENGTH(text)) < 0)
            goto no_memory;
        size_t features = text_features(&buffers, WORDSET, text);
        if (table_reserve(&table, features) < 0)
            goto no_memory;
        if (words_used + features > words_capacity) {
            size_t capacity = 2 * (words_used + features) + 1024;
            uint64_t *grown = realloc(words, capacity * sizeof(uint64_t));
            if (!grown)
                goto no_memory;
            words = grown;
            words_capacity = capacity;
        }
        size_t first = words_used;
        for (size_t j = 0; j < features; j++) {
            Py_ssize_t slot = feature_slot(&table, &buffers.features[j]);
            if (slot < 0)
                goto no_memory;
            if (table.last_text[slot] == i)
                continue;
            table.last_text[slot] = i;
            uint64_t value = table.slots[slot].value;
            if (!contains(skip, skipped, value))
                words[words_used++] = value;
        }
        qsort(words + first, words_used - first, sizeof(uint64_t), compare_words);
        sizes[i] = (int64_t)(words_used - first);
    }
    hashes = PyBytes_FromStringAndSize((const char *)words, (Py_ssize_t)(words_used * sizeof(uint64_t)));
    if (hashes)
        result = PyTuple_Pack(2, counts, hashes);
    goto done;
no_memory:
    PyErr_NoMemory();
done:
    Py_XDECREF(counts);
    Py_XDECREF(hashes);
    free(words);
    table_free(&table);
    buffers_free(&buffers);
    Py_DECREF(sequence);
released:
    PyBuffer_Release(&ignored);
    return result;
}

/* The first two arguments of a function over word sets in CSR form: indptr (native int64) and
   words (native uint32 numbers of the vocabulary). Returns the number of texts once each text's
   slice indptr[i]:indptr[i + 1] is known to lie in the words, in order; else -1 with an error set. */
static Py_ssize_t csr_texts(const Py_buffer *indptr, const Py_buffer *words)
{
    const int64_t *starts = indptr->buf;
    Py_ssize_t texts = indptr->len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t count = words->len / (Py_ssize_t)sizeof(uint32_t);
    if (texts < 0) {
        PyErr_SetString(PyExc_ValueError, "indptr is empty");
        return -1;
    }
    for (Py_ssize_t i = 0; i <= texts; i++)
        if (starts[i] < 0 || starts[i] > count || (i && starts[i] < starts[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "indptr does not fit the words");
            return -1;
        }
    return texts;
}

/* Whether text i's slice indptr[i]:indptr[i + 1] lies in COUNT words, in order. */
static inline int text_fits(const int64_t *starts, int64_t i, Py_ssize_t count)
{
    return starts[i] >= 0 && starts[i] <= starts[i + 1] && starts[i + 1] <= count;
}

PyDoc_STRVAR(minhash_sets_doc,
             "minhash_sets(indptr, words, table, width) -> bytes\n\n"
             "Per text (its words are words[indptr[i]:indptr[i + 1]], numbers of vocabulary entries)\n"
             "and per column p < width, the minimum over its words w of table[w * width + p], as\n"
             "native uint32, text by text (all ones for a text without words). table holds each\n"
             "vocabulary entry's hash values, width to a row; indptr is native int64, the others\n"
             "native uint32.");

static PyObject *minhash_sets(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer indptr, words, table;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*y*y*n:minhash_sets", &indptr, &words, &table, &width))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t texts = csr_texts(&indptr, &words);
    const int64_t *starts = indptr.buf;
    const uint32_t *w = words.buf, *values = table.buf;
    Py_ssize_t entries = width > 0 ? table.len / (Py_ssize_t)sizeof(uint32_t) / width : 0;
    if (texts < 0)
        goto done;
    if (width <= 0 || entries * width * (Py_ssize_t)sizeof(uint32_t) != table.len) {
        PyErr_SetString(PyExc_ValueError, "the table is not whole rows of width values");
        goto done;
    }
    for (int64_t j = starts[0]; j < starts[texts]; j++)
        if (w[j] >= (uint64_t)entries) {
            PyErr_SetString(PyExc_IndexError, "a word is past the end of the table");
            goto done;
        }
    result = PyBytes_FromStringAndSize(NULL, texts * width * (Py_ssize_t)sizeof(uint32_t));
    if (!result)
        goto done;
    uint32_t *out = (uint32_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < texts; i++) {
        uint32_t *minimum = out + i * width;
        for (Py_ssize_t p = 0; p < width; p++)
            minimum[p] = UINT32_MAX;
        for (int64_t j = starts[i]; j < starts[i + 1]; j++) {
            const uint32_t *row = values + (Py_ssize_t)w[j] * width;
            for (Py_ssize_t p = 0; p < width; p++)
                if (row[p] < minimum[p])
                    minimum[p] = row[p];
        }
    }
done:
    PyBuffer_Release(&indptr);
    PyBuffer_Release(&words);
    PyBuffer_Release(&table);
    return result;
}

PyDoc_STRVAR(common_words_doc,
             "common_words(indptr, words, left, right) -> bytes\n\n"
             "For each pair (left[k], right[k]) of texts, how many words they share: text i's words\n"
             "are words[indptr[i]:indptr[i + 1]], ascending. indptr, left and right are native int64\n"
             "bytes, words native uint32 bytes; the counts come back as native int64.");

static PyObject *common_words(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer indptr, words, left, right;
    if (!PyArg_ParseTuple(args, "y*y*y*y*:common_words", &indptr, &words, &left, &right))
        return NULL;
    /* Called for every batch of candidate pairs: only the texts of the pairs are checked against
       the words, not the whole indptr each time. */
    PyObject *result = NULL;
    Py_ssize_t texts = indptr.len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t count = words.len / (Py_ssize_t)sizeof(uint32_t);
    const int64_t *starts = indptr.buf, *a = left.buf, *b = right.buf;
    const uint32_t *w = words.buf;
    Py_ssize_t pairs = left.len / (Py_ssize_t)sizeof(int64_t);
    if (left.len != right.len) {
        PyErr_SetString(PyExc_ValueError, "left and right differ in length");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, pairs * (Py_ssize_t)sizeof(int64_t));
    if (!result)
        goto done;
    int64_t *out = (int64_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t k = 0; k < pairs; k++) {
        if (a[k] < 0 || a[k] >= texts || b[k] < 0 || b[k] >= texts) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_IndexError, "text index out of range");
            goto done;
        }
        if (!text_fits(starts, a[k], count) || !text_fits(starts, b[k], count)) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_ValueError, "indptr does not fit the words");
            goto done;
        }
        int64_t i = starts[a[k]], i_end = starts[a[k] + 1], j = starts[b[k]], j_end = starts[b[k] + 1], n = 0;
        while (i < i_end && j < j_end) {
            if (w[i] < w[j])
                i++;
            else if (w[i] > w[j])
                j++;
            else {
                n++;
                i++;
                j++;
            }
        }
        out[k] = n;
    }
done:
    PyBuffer_Release(&indptr);
    PyBuffer_Release(&words);
    PyBuffer_Release(&left);
    PyBuffer_Release(&right);
    return result;
}

static PyMethodDef methods[] = {
    {"fingerprints_folded", fingerprints_folded, METH_VARARGS, fingerprints_folded_doc},
    {"word_sets_folded", word_sets_folded, METH_VARARGS, word_sets_folded_doc},
    {"minhash_sets", minhash_sets, METH_VARARGS, minhash_sets_doc},
    {"common_words", common_words, METH_VARARGS, common_words_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_simhash", "Simhash fingerprints in C, bit-identical to the simhash package.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__simhash(void)
{
    for (int i = 0; i < 64; i++)
        md5_sine[i] = (uint32_t)floor(fabs(sin((double)(i + 1))) * 4294967296.0);
    for (int v = 0; v < 256; v++) {
        spread[v] = 0;
        for (int k = 0; k < 8; k++)
            spread[v] |= (uint64_t)((v >> k) & 1) << (8 * k);
        letter[v] = (v >= 'a' && v <= 'z') || (v >= '0' && v <= '9') || v == '_' ? (unsigned char)v
                    : v >= 'A' && v <= 'Z'                                       ? (unsigned char)(v - 'A' + 'a')
                                                                                 : 0;
    }
    return PyModule_Create(&module);
}
