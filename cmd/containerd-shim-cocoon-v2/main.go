// Command containerd-shim-cocoon-v2 is cocoon's containerd runtime
// (runtime_type io.containerd.cocoon.v2): containerd starts it for each
// pod whose RuntimeClass names the cocoon handler, and it runs the pod in a
// cocoon sandbox. See docs/kubernetes.md.
package main

import (
	"context"
	"log/slog"

	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"cocoon.dev/cocoon/shimv2"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			// The shim library points containerd's logger at the shim's
			// log fifo, which containerd copies into its own log.
			lg := slog.New(slog.NewTextHandler(log.G(ic.Context).Logger.Out, nil))
			return shimv2.NewService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service), lg), nil
		},
	})
	// The shim waits for its own children (the agent or QEMU): the shim
	// library's reaper would take their exit statuses.
	shim.RunShim(context.Background(), shimv2.Manager{Version: version}, func(c *shim.Config) { c.NoReaper = true })
}
