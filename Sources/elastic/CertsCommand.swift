import ArgumentParser
import ElasticServices
import Foundation

struct Certs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and inspect the cluster's certificates.",
        discussion: "Example: elastic certs init --dir ./elastic-data && elastic certs hash --dir ./elastic-data",
        subcommands: [Init.self, Hash.self]
    )

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the cluster CA, the controller's certificate and the admin certificate.",
            discussion: """
            Writes <dir>/pki/{ca,controller,admin}.{pem,key} and prints the CA hash that workers pin with --ca-hash.
            Example: elastic certs init --dir ./elastic-data --san controller.example.com
            """
        )

        @Option(name: .customLong("dir"), help: "The controller's data dir.")
        var directory: String = "./elastic-data"

        @Option(name: .customLong("san"), help: "An extra DNS name or IP address for the controller's certificate (repeatable).")
        var alternativeNames: [String] = []

        @Flag(help: "Replace an existing CA (every worker must join again).")
        var force = false

        func run() async throws {
            let created = try ClusterPKI.initialize(dataDirectory: URL(fileURLWithPath: directory), alternativeNames: alternativeNames, force: force)
            print("created the cluster CA, the controller and the admin certificates in \(created.directory.path)")
            print("CA hash: \(created.caHash)")
        }
    }

    struct Hash: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the CA hash (sha256:<hex> of the CA's public key) that workers pin.",
            discussion: "Example: elastic certs hash --dir ./elastic-data"
        )

        @Option(name: .customLong("dir"), help: "The controller's data dir.")
        var directory: String = "./elastic-data"

        func run() async throws {
            print(try ClusterPKI.caHash(dataDirectory: URL(fileURLWithPath: directory)))
        }
    }
}
