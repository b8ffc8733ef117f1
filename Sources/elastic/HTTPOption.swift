import ArgumentParser
import CoreMetrics
import ElasticServices
import Prometheus

/// `--http HOST:PORT|off` of `elastic controller` and `elastic join` (docs/observability.md).
enum HTTPOption {
    static let help = "Plain HTTP without authentication, read-only; binding beyond loopback exposes it to the network. Port 0 picks a free port; 'off' disables it."

    static func validate(_ text: String?) throws {
        guard let text, text != "off" else { return }
        guard Endpoint(parsing: text) != nil else {
            throw ValidationError("--http '\(text)' is not HOST:PORT or off (for example 127.0.0.1:9400)")
        }
    }

    /// The listener settings for `text` (nil: the default, which may be taken by another process
    /// and then only turns the listener off with a warning). Bootstraps swift-metrics once for
    /// the process with the registry the service exports.
    static func settings(_ text: String?, default fallback: Endpoint, allowedHosts: [String]) -> HTTPListenSettings {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(MetricCatalog.factory(registry: registry))
        guard let text else { return HTTPListenSettings(endpoint: fallback, required: false, registry: registry, allowedHosts: allowedHosts) }
        return HTTPListenSettings(endpoint: text == "off" ? nil : Endpoint(parsing: text), required: true, registry: registry, allowedHosts: allowedHosts)
    }

    static let allowHostHelp = ArgumentHelp(
        "A host name the HTTP listener answers to besides IP addresses and localhost (repeat for several).",
        discussion: "Requests that name another Host get 403, so that a web page cannot read the listener through a name of its own (DNS rebinding).",
        valueName: "name")
}
