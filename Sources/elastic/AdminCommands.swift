import ArgumentParser
import ElasticCore
import ElasticServices
import ElasticWire
import Foundation

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the members, the job's progress and its plan as a grid.",
        discussion: "Example: elastic status --data-dir ./elastic-data --json"
    )

    @OptionGroup var admin: AdminOptions

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        let status = try await admin.client().status()
        if json {
            print(try StatusReport(status).json())
        } else {
            print(StatusReport(status).table())
        }
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and revoke bootstrap tokens.",
        discussion: "Example: elastic token create --ttl 1h --data-dir ./elastic-data",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a bootstrap token and print it (only its hash is stored).",
            discussion: "Example: elastic token create --ttl 1h --uses 3 --data-dir ./elastic-data"
        )

        @OptionGroup var admin: AdminOptions

        @Option(help: "How long the token is valid (0 never expires).")
        var ttl: String = "24h"

        @Option(help: "How many joins it admits (default: unlimited).")
        var uses: UInt32?

        @Option(help: "A note shown by 'token list'.")
        var description: String = ""

        func validate() throws {
            if ttl != "0" { _ = try parseDuration(ttl, option: "--ttl") }
            if uses == 0 { throw ValidationError("--uses must be at least 1 (omit it for unlimited)") }
        }

        func run() async throws {
            let client = try admin.client()
            let lifetime = ttl == "0" ? nil : Duration(parsing: ttl)
            let created = try await client.createToken(ttl: lifetime, uses: uses, description: description)
            print(created.token)
            let hash = (try? ClusterPKI.caHash(dataDirectory: URL(fileURLWithPath: admin.dataDirectory))) ?? "<elastic certs hash>"
            let expiry = created.expiresAt.map { "expires \(Date(timeIntervalSince1970: TimeInterval($0)))" } ?? "never expires"
            FileHandle.standardError.write(Data("""
            token \(created.token.prefix(6)) \(expiry)\(uses.map { ", \($0) use(s)" } ?? ""); join a worker with:
              elastic join \(client.controller) --token \(created.token) --ca-hash \(hash)

            """.utf8))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List bootstrap tokens (never their secrets).", discussion: "Example: elastic token list --json")

        @OptionGroup var admin: AdminOptions

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        func run() async throws {
            let tokens = try await admin.client().listTokens()
            if json {
                print(try TokenReport(tokens).json())
            } else {
                print(TokenReport(tokens).table(now: Int64(Date().timeIntervalSince1970)))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a bootstrap token by its id.", discussion: "Example: elastic token revoke abcdef")

        @OptionGroup var admin: AdminOptions

        @Argument(help: "The token id (the part before the dot).")
        var id: String

        func run() async throws {
            print(try await admin.client().revokeToken(id: String(id.split(separator: ".").first ?? "")))
        }
    }
}

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage nodes' certificates.",
        discussion: "Example: elastic node revoke worker-3 --data-dir ./elastic-data",
        subcommands: [Revoke.self]
    )

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke every certificate of a node: its member dies at once, its connections close, and it can join again only with a new token.",
            discussion: "Example: elastic node revoke worker-3 --data-dir ./elastic-data"
        )

        @OptionGroup var admin: AdminOptions

        @Argument(help: "The node's name (as 'elastic status' lists it).")
        var name: String

        func validate() throws {
            if let problem = NodeID.problem(with: name) {
                throw ValidationError("'\(name)' is not a node name: \(problem)")
            }
        }

        func run() async throws {
            print(try await admin.client().revokeNode(name))
        }
    }
}
