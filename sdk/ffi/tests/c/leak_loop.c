/*
 * Creates, starts, plays briefly through, stops and frees a Shoal node N times, for a leak
 * checker (valgrind or LeakSanitizer) to compare runs of different N.
 *
 *   leak_loop CONFIG_FILE N MANIFEST_URL
 *
 * Each round: shoal_node_new, both callbacks, shoal_node_start, shoal_node_local_url for the
 * manifest, an HTTP GET of the manifest, of the first playlist it lists, and of that
 * playlist's first segment through the node, shoal_node_stats_json, shoal_node_stop,
 * shoal_node_free; the round fails if its node logged nothing or did not tell its start and
 * stop through the event callback. Prints "ROUNDS <n> SEGMENT_BYTES <total> LOG_LINES <n>
 * EVENTS <n>" and exits 0, or prints "FAIL ..." and exits 1.
 *
 * With LEAK_LOOP_FORGET_STATS set, each round leaks its stats string (never passed to
 * shoal_string_free): a leak the checker must report.
 */
#define _POSIX_C_SOURCE 200809L
#include "shoal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_long log_lines;
static atomic_long events;

static void on_log(void *user_data, ShoalLogLevel level, const char *target, const char *line) {
    (void)level;
    (void)target;
    (void)line;
    atomic_fetch_add((atomic_long *)user_data, 1);
}

static void on_event(void *user_data, ShoalEventKind kind, const char *json) {
    (void)kind;
    (void)json;
    atomic_fetch_add((atomic_long *)user_data, 1);
}

/* A response body, or NULL. Only http://127.0.0.1:PORT/PATH URLs (the node's own). */
static char *http_get(const char *url, size_t *len) {
    unsigned port = 0;
    int at = 0;
    if (sscanf(url, "http://127.0.0.1:%u%n", &port, &at) != 1 || url[at] != '/') return NULL;
    const char *path = url + at;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return NULL;
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return NULL;
    }
    char request[1024];
    int n = snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%u\r\n\r\n", path, port);
    if (n <= 0 || (size_t)n >= sizeof request || write(fd, request, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, used = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (used == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t got = read(fd, buf + used, cap - used);
        if (got <= 0) break;
        used += (size_t)got;
    }
    close(fd);
    buf[used] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 8, " 200", 4) != 0 || !body) {
        fprintf(stderr, "GET %s: %.80s\n", url, buf);
        free(buf);
        return NULL;
    }
    body += 4;
    *len = used - (size_t)(body - buf);
    memmove(buf, body, *len + 1);
    return buf;
}

/* The first URI line of a playlist, resolved against its URL (absolute or relative). */
static char *first_uri(const char *playlist, const char *base) {
    const char *line = playlist;
    while (*line) {
        size_t n = strcspn(line, "\r\n");
        if (n > 0 && line[0] != '#') {
            char *uri = malloc(strlen(base) + n + 1);
            if (strncmp(line, "http://", 7) == 0) {
                memcpy(uri, line, n);
                uri[n] = '\0';
            } else {
                size_t dir = (size_t)(strrchr(base, '/') - base) + 1;
                memcpy(uri, base, dir);
                memcpy(uri + dir, line, n);
                uri[dir + n] = '\0';
            }
            return uri;
        }
        line += n;
        while (*line == '\r' || *line == '\n') line++;
    }
    return NULL;
}

static int fail(const char *what, ShoalStatus s) {
    printf("FAIL %s: status %d: %s\n", what, (int)s, shoal_last_error_message());
    return 1;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    size_t got = fread(text, 1, (size_t)n, f);
    text[got] = '\0';
    fclose(f);
    return text;
}

static int round_trip(const char *config, const char *manifest, size_t *segment_bytes) {
    long logs_before = atomic_load(&log_lines), events_before = atomic_load(&events);
    ShoalNode *node = NULL;
    ShoalStatus s = shoal_node_new(config, &node);
    if (s != SHOAL_STATUS_OK) return fail("new", s);
    if ((s = shoal_node_set_log_callback(node, "debug", on_log, &log_lines)) != SHOAL_STATUS_OK)
        return fail("log callback", s);
    if ((s = shoal_node_set_event_callback(node, on_event, &events)) != SHOAL_STATUS_OK)
        return fail("event callback", s);
    if ((s = shoal_node_start(node)) != SHOAL_STATUS_OK) return fail("start", s);
    char *url = NULL;
    if ((s = shoal_node_local_url(node, manifest, &url)) != SHOAL_STATUS_OK) return fail("local_url", s);

    size_t len = 0;
    char *master = http_get(url, &len);
    char *media_url = master ? first_uri(master, url) : NULL;
    char *media = media_url ? http_get(media_url, &len) : NULL;
    char *segment_url = media ? first_uri(media, media_url) : NULL;
    char *segment = segment_url ? http_get(segment_url, &len) : NULL;
    int ok = segment != NULL && len > 0;
    if (ok) *segment_bytes += len;
    else printf("FAIL playing %s (media %s, segment %s)\n", url, media_url ? media_url : "-",
                segment_url ? segment_url : "-");
    free(segment);
    free(segment_url);
    free(media);
    free(media_url);
    free(master);
    shoal_string_free(url);

    char *stats = NULL;
    if ((s = shoal_node_stats_json(node, &stats)) != SHOAL_STATUS_OK) return fail("stats", s);
    /* LEAK_LOOP_FORGET_STATS=1: a leak on purpose, to show the checker sees one. */
    if (!getenv("LEAK_LOOP_FORGET_STATS")) shoal_string_free(stats);
    if ((s = shoal_node_stop(node)) != SHOAL_STATUS_OK) return fail("stop", s);
    shoal_node_free(node);
    /* Every node logs and tells its start and stop, not only the first of the process. */
    if (atomic_load(&log_lines) == logs_before) {
        printf("FAIL no log line from this round's node\n");
        return 1;
    }
    if (atomic_load(&events) < events_before + 2) {
        printf("FAIL no start and stop events from this round's node\n");
        return 1;
    }
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: leak_loop CONFIG_FILE N MANIFEST_URL\n");
        return 2;
    }
    char *config = read_file(argv[1]);
    if (!config) {
        printf("FAIL reading %s\n", argv[1]);
        return 1;
    }
    long rounds = strtol(argv[2], NULL, 10);
    size_t segment_bytes = 0;
    for (long i = 0; i < rounds; i++) {
        if (round_trip(config, argv[3], &segment_bytes)) {
            free(config);
            return 1;
        }
    }
    free(config);
    printf("ROUNDS %ld SEGMENT_BYTES %zu LOG_LINES %ld EVENTS %ld\n", rounds, segment_bytes,
           atomic_load(&log_lines), atomic_load(&events));
    return 0;
}
