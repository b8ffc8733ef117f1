import ElasticTransport
import Foundation
import Logging
import Prometheus

/// Where a process serves its read-only HTTP pages: `/metrics` for both, and for the
/// controller the dashboard (`/`) and its data (`/api/state`). Plain HTTP without
/// authentication: loopback by default; another address is the operator's explicit choice.
public struct HTTPListenSettings: Sendable {
    /// Nil: no listener (`--http off`).
    public var endpoint: Endpoint?
    /// Whether a failure to bind stops the process (an address the operator chose) or only
    /// turns the listener off with a warning (the default address, which another process on
    /// the host may hold).
    public var required: Bool
    /// The registry the metrics are made in; the CLI passes the one it bootstrapped
    /// swift-metrics with. Nil: one of this service's own.
    public var registry: PrometheusCollectorRegistry?
    /// Host names requests may use besides IP addresses and `localhost` (`--http-allow-host`).
    public var allowedHosts: [String]

    public init(endpoint: Endpoint?, required: Bool, registry: PrometheusCollectorRegistry? = nil, allowedHosts: [String] = []) {
        self.endpoint = endpoint
        self.required = required
        self.registry = registry
        self.allowedHosts = allowedHosts
    }

    /// The file in `directory` in which a running process records its HTTP address.
    public static func addressFile(dataDirectory: URL) -> URL {
        dataDirectory.appendingPathComponent("http.address")
    }

    /// Binds the listener, records its address in `addressFile` and logs where it is. Returns
    /// nil when there is no listener: turned off, or the default address was taken.
    func start(addressFile: URL?, logger: Logger, pages: (Endpoint) -> String) async throws -> StatusHTTPServer? {
        // A stale address (of an earlier run) must not send anyone to another process.
        if let addressFile { try? FileManager.default.removeItem(at: addressFile) }
        guard let endpoint else { return nil }
        let server: StatusHTTPServer
        do {
            server = try await StatusHTTPServer.bind(endpoint, allowedHosts: allowedHosts)
        } catch {
            if required { throw error }
            logger.warning("no dashboard or metrics: \(error)")
            return nil
        }
        if let addressFile { try? PKIFiles.write("\(server.address)\n", to: addressFile, mode: 0o644) }
        logger.info("\(pages(server.address))")
        return server
    }
}

/// What each path of the listener answers.
enum ObservabilityRoutes {
    static func controller(state: ControllerState, metrics: ControllerMetrics) -> StatusHTTPServer.Route {
        let page = Array(DashboardPage.html.utf8)
        return { path in
            switch path {
            case "/", "/index.html":
                return HTTPReply(contentType: "text/html; charset=utf-8", body: page)
            case "/api/state":
                return HTTPReply(contentType: "application/json", body: await state.observation().json())
            case "/metrics":
                let text = metrics.scrape(await state.observation())
                return HTTPReply(contentType: MetricCatalog.contentType, body: Array(text.utf8))
            default:
                return nil
            }
        }
    }

    static func worker(metrics: WorkerMetrics) -> StatusHTTPServer.Route {
        { path in
            switch path {
            case "/metrics":
                return HTTPReply(contentType: MetricCatalog.contentType, body: Array(metrics.scrape().utf8))
            case "/":
                return .text("elastic worker: metrics at /metrics; the dashboard is on the controller\n")
            default:
                return nil
            }
        }
    }
}
