/*
 * A C app embedding a Shoal node through shoal.h, driven by a test over its stdin/stdout.
 *
 *   driver play CONFIG_FILE MANIFEST_URL
 *     Creates the node from the TOML file, registers a log and an event callback, starts
 *     it, prints "URL <local url>" and then answers lines on stdin:
 *       stats -> "STATS <json>"
 *       stop  -> stops, prints "STOPPED", "STATS <json>" (the last run's totals),
 *                "LOG_LINES <n>", frees the node, prints "FREED" and exits 0.
 *     Events are printed as "EVENT <kind> <json>"; log lines go to stderr. On the first
 *     swarm_joined event the callback calls shoal_node_stats_json and shoal_node_stop on
 *     its node and prints "REENTRY stats <status> json|null" and "REENTRY stop <status>
 *     <message>".
 *
 *   driver errors ORIGIN_HOST_PORT BUSY_ADDR
 *     Makes calls that must fail and prints "RESULT <case> <status> <message>" for each.
 *
 * Any unexpected failure prints "FAIL ..." and exits 1.
 */
#include "shoal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_long log_lines;

static void on_log(void *user_data, ShoalLogLevel level, const char *target, const char *line) {
    atomic_long *count = user_data;
    atomic_fetch_add(count, 1);
    fprintf(stderr, "c-log %d %s: %s\n", (int)level, target, line);
}

static const char *kind_name(ShoalEventKind kind) {
    switch (kind) {
    case SHOAL_EVENT_KIND_NODE_STARTED: return "node_started";
    case SHOAL_EVENT_KIND_NODE_STOPPED: return "node_stopped";
    case SHOAL_EVENT_KIND_SWARM_JOINED: return "swarm_joined";
    case SHOAL_EVENT_KIND_SWARM_LEFT: return "swarm_left";
    case SHOAL_EVENT_KIND_PEER_CONNECTED: return "peer_connected";
    case SHOAL_EVENT_KIND_PEER_LOST: return "peer_lost";
    }
    return "unknown";
}

/* What the event callback gets as user_data. */
struct app {
    ShoalNode *node;
    int reentered;
};

static void on_event(void *user_data, ShoalEventKind kind, const char *json) {
    struct app *app = user_data;
    printf("EVENT %s %s\n", kind_name(kind), json);
    /* Calls back into the node from its own callback: stats are allowed, stop is not. */
    if (kind == SHOAL_EVENT_KIND_SWARM_JOINED && app->node && !app->reentered) {
        app->reentered = 1;
        char *stats = NULL;
        ShoalStatus s = shoal_node_stats_json(app->node, &stats);
        printf("REENTRY stats %d %s\n", (int)s, stats ? "json" : "null");
        shoal_string_free(stats);
        s = shoal_node_stop(app->node);
        printf("REENTRY stop %d %s\n", (int)s, shoal_last_error_message());
    }
    fflush(stdout);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) {
        free(text);
        text = NULL;
    }
    if (text) text[n] = '\0';
    fclose(f);
    return text;
}

static int fail(const char *what, ShoalStatus status) {
    printf("FAIL %s: status %d: %s\n", what, (int)status, shoal_last_error_message());
    fflush(stdout);
    return 1;
}

static int print_stats(ShoalNode *node) {
    char *json = NULL;
    ShoalStatus s = shoal_node_stats_json(node, &json);
    if (s != SHOAL_STATUS_OK) return fail("stats", s);
    printf("STATS %s\n", json);
    fflush(stdout);
    shoal_string_free(json);
    return 0;
}

static int play(const char *config_file, const char *manifest) {
    char *config = read_file(config_file);
    if (!config) {
        printf("FAIL reading %s\n", config_file);
        return 1;
    }
    ShoalNode *node = NULL;
    ShoalStatus s = shoal_node_new(config, &node);
    free(config);
    if (s != SHOAL_STATUS_OK) return fail("new", s);
    /* DRIVER_LOG=debug shows each segment's way in the test's output. */
    const char *filter = getenv("DRIVER_LOG") ? getenv("DRIVER_LOG") : "info";
    s = shoal_node_set_log_callback(node, filter, on_log, &log_lines);
    if (s != SHOAL_STATUS_OK) return fail("set_log_callback", s);
    static struct app app;
    app.node = node;
    s = shoal_node_set_event_callback(node, on_event, &app);
    if (s != SHOAL_STATUS_OK) return fail("set_event_callback", s);
    s = shoal_node_start(node);
    if (s != SHOAL_STATUS_OK) return fail("start", s);
    char *url = NULL;
    s = shoal_node_local_url(node, manifest, &url);
    if (s != SHOAL_STATUS_OK) return fail("local_url", s);
    printf("URL %s\n", url);
    fflush(stdout);
    shoal_string_free(url);

    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "stats", 5) == 0) {
            if (print_stats(node)) return 1;
        } else if (strncmp(line, "stop", 4) == 0) {
            s = shoal_node_stop(node);
            if (s != SHOAL_STATUS_OK) return fail("stop", s);
            printf("STOPPED\n");
            if (print_stats(node)) return 1;
            printf("LOG_LINES %ld\n", atomic_load(&log_lines));
            shoal_node_free(node);
            printf("FREED\n");
            fflush(stdout);
            return 0;
        }
    }
    printf("FAIL stdin closed before stop\n");
    shoal_node_free(node);
    return 1;
}

static void result(const char *name, ShoalStatus s) {
    printf("RESULT %s %d %s\n", name, (int)s, shoal_last_error_message());
    fflush(stdout);
}

static int errors(const char *origin, const char *busy) {
    char config[512];
    ShoalNode *node = (ShoalNode *)&config; /* must be set to NULL on failure */

    result("misspelt_key", shoal_node_new("origins = [\"cdn.example\"]\ncache_sise = \"1MiB\"\n", &node));
    if (node != NULL) { printf("FAIL node not NULL after a failed new\n"); return 1; }
    result("bad_value", shoal_node_new("origins = [\"cdn.example\"]\ncache_size = \"lots\"\n", &node));
    result("no_origin", shoal_node_new("", &node));
    result("not_toml", shoal_node_new("origins = [", &node));
    result("null_config", shoal_node_new(NULL, &node));
    result("null_out", shoal_node_new("origins = [\"cdn.example\"]", NULL));
    result("null_node_start", shoal_node_start(NULL));
    char *text = (char *)config;
    result("null_node_stats", shoal_node_stats_json(NULL, &text));
    if (text != NULL) { printf("FAIL out not NULL after a failed stats\n"); return 1; }

    snprintf(config, sizeof config,
             "origins = [\"%s\"]\norigin_schemes = [\"%s=http\"]\npeer_listen = \"127.0.0.1:0\"\n",
             origin, origin);
    ShoalStatus s = shoal_node_new(config, &node);
    if (s != SHOAL_STATUS_OK) return fail("new", s);
    result("bad_filter", shoal_node_set_log_callback(node, "shoal=loud", on_log, &log_lines));
    result("url_before_start", shoal_node_local_url(node, "http://cdn.example/a.m3u8", &text));
    result("stats_before_start", shoal_node_stats_json(node, &text));
    s = shoal_node_start(node);
    if (s != SHOAL_STATUS_OK) return fail("start", s);
    result("start_twice", shoal_node_start(node));
    result("other_origin", shoal_node_local_url(node, "http://elsewhere.example/a.m3u8", &text));
    result("not_a_url", shoal_node_local_url(node, "not a url", &text));
    result("message_cleared_by_success", shoal_node_stats_json(node, &text));
    shoal_string_free(text);
    shoal_node_free(node);

    snprintf(config, sizeof config, "origins = [\"%s\"]\nlisten = \"%s\"\n", origin, busy);
    s = shoal_node_new(config, &node);
    if (s != SHOAL_STATUS_OK) return fail("new", s);
    result("listen_taken", shoal_node_start(node));
    shoal_node_free(node);
    shoal_node_free(NULL);
    shoal_string_free(NULL);
    printf("VERSION %s\nDONE\n", shoal_version());
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "play") == 0) return play(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "errors") == 0) return errors(argv[2], argv[3]);
    fprintf(stderr, "usage: driver play CONFIG_FILE MANIFEST_URL | driver errors ORIGIN BUSY_ADDR\n");
    return 2;
}
