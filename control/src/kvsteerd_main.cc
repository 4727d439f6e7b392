// kvsteerd: the kvsteer control daemon (see kvsteerd --help and deploy/kvsteerd.conf.example).
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <sys/file.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "kvsteer/bpf/maps.h"
#include "kvsteer/control/config.h"
#include "kvsteer/control/daemon.h"
#include "kvsteer/control/http_client.h"

namespace {
kvsteer::control::Daemon *g_daemon = nullptr;
void on_signal(int) {
    if (g_daemon) g_daemon->stop();
}
}  // namespace

int main(int argc, char **argv) {
    using namespace kvsteer::control;
    auto r = parse_daemon_config(argc, argv);
    if (r.outcome == ParseOutcome::Help) {
        std::fputs(r.message.c_str(), stdout);
        return 0;
    }
    if (r.outcome == ParseOutcome::Error) {
        if (r.retryable) {
            std::fprintf(stderr, "kvsteerd: %s (not there yet? exit 1: restarted, tried again)\n",
                         r.message.c_str());
            return 1;
        }
        std::fprintf(stderr, "kvsteerd: configuration error: %s\n", r.message.c_str());
        return 2;
    }
    spdlog::set_level(spdlog::level::from_str(r.cfg.log_level));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    {
        // A socket per backend per probe round, all at once: the usual soft limit (1024) is not
        // enough for many backends (deploy/systemd/kvsteerd.service sets LimitNOFILE too).
        std::string e;
        const std::uint64_t nofile = raise_nofile_limit(&e);
        if (e.empty())
            spdlog::info("open files: soft limit {}", nofile);
        else
            spdlog::warn("open files: soft limit stays {}: {}", nofile, e);
    }

    std::string err;
    auto maps = kvsteer::bpf::open_pinned_maps(r.cfg.bpffs, true, &err);
    if (!maps) {
        std::fprintf(stderr, "kvsteerd: bpffs: %s\n", err.c_str());
        return 1;
    }
    // One kvsteerd a bpffs directory: a second one (another api-socket, the same maps) wrote
    // the maps beside the first. The lock is the directory's own (flock), held until exit.
    const int lock_fd = open(r.cfg.bpffs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        std::fprintf(stderr, "kvsteerd: bpffs %s: %s\n", r.cfg.bpffs.c_str(),
                     errno == EWOULDBLOCK ? "another kvsteerd uses these maps (its lock is held)"
                                          : std::strerror(errno));
        return 1;
    }
    // Views of the maps; `maps` outlives them.
    Daemon d(r.cfg, *maps, FleetMaps{maps->fleet, maps->owner, maps->fleet_heard});
    if (!d.start(&err)) {
        if (d.start_failed_on_config()) {
            std::fprintf(stderr, "kvsteerd: configuration error: %s\n", err.c_str());
            return 2;
        }
        std::fprintf(stderr, "kvsteerd: %s\n", err.c_str());
        return 1;
    }
    g_daemon = &d;
    // Ready: the maps and kvs_config are written and the API socket listens (Type=notify: the
    // dataplane unit, ordered after this one, starts only now).
    if (!notify_systemd("READY=1", &err)) spdlog::warn("systemd notify: {}", err);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    d.run();
    g_daemon = nullptr;
    return 0;
}
