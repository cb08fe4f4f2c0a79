/** The shapes of the hub's answers and events (docs/hub-api.md). */

export interface ISessionInfo {
  name: string;
  id: string;
  level: string;
  key_type: string;
  owner: boolean | string;
  created: string;
  ca_sha256: string;
  ca_not_after: string;
  ca_key_encrypted: boolean;
  phone_home: string | null;
  enroll: string | null;
}

export interface ICert {
  serial: string | number;
  name: string;
  role: string;
  unique_id: string | null;
  key_type: string;
  not_before: string;
  not_after: string;
  issued_at: string;
  for_friend: string | boolean | null; // the friend's name when issued for one
  sha256: string;
  key_kept: boolean;
  revoked_at: string | null;
  revoked_reason: string | null;
  status: 'valid' | 'expired' | 'revoked';
}

export interface ISessionDetail extends ISessionInfo {
  certificates: ICert[];
}

export interface IServerInfo {
  id: string;
  kind: string;
  session: string;
  mode: string;
  launcher: string;
  state: string;
  reason: string;
  local: string | null;
  connect_id: number | null;
  host: string | null;
  job_id: string | null;
  note: string;
  last_phone_home: number | null;
  restarts: number;
  created: number;
  updated: number;
  attempts: number;
  peer: string | null;
  where: string | null;
  streams: number;
  /** When the batch scheduler's time limit ends its job (epoch s), and the seconds left. */
  ends_at?: number | null;
  time_left?: number | null;
  /** pvserver's version, as its agent reported it. */
  program_version?: string | null;
  /** One line when that version cannot talk to the hub host's pvpython (which, what to do). */
  version_check?: string | null;
}

/** One option of a launcher (GET /hub `launchers`; paraconnect.servers.register_launcher). */
export interface ILauncherOption {
  key: string;
  help: string;
  required: boolean;
  type: 'text' | 'int';
  flag: string;
}

/** A launcher the hub knows; `hub_runs` false: the user starts the agent (manual). */
export interface ILauncherInfo {
  name: string;
  summary: string;
  hub_runs: boolean;
  options: ILauncherOption[];
}

/** One option of a server kind (GET /launch-options; paraconnect/servers/_kinds_options.py). */
export interface IKindOption {
  key: string;
  help: string;
  type: 'text' | 'int' | 'bool' | 'choice';
  default: string | number | boolean | null;
  choices: string[];
  minimum: number;
}

export interface IKindInfo {
  name: string;
  summary: string;
  needs_command: boolean;
  options: IKindOption[];
}

/** What a launch form offers (GET /launch-options, op launch_options). */
export interface ILaunchOptions {
  kinds: IKindInfo[];
  launchers: ILauncherInfo[];
  modes: string[];
  rules: {
    max_servers: number;
    ssh_hosts: string[];
    slurm_defaults: Record<string, unknown>;
  };
}

/** What GET /hub tells (docs/hub-api.md); only what the panel reads. */
export interface IHubInfo {
  version: string;
  launchers: ILauncherInfo[];
}

export interface IFriendIssued {
  certificate: ICert;
  filename: string;
}

export interface IAgentCommand {
  server: IServerInfo;
  command: string;
  expires: number | string;
}

/** One message of the events websocket. */
export type HubEvent =
  | {
      event: 'server';
      server_id: string;
      state: string;
      previous: string;
      reason: string;
      at: number;
    }
  | {
      event: 'phone_home';
      server_id: string;
      session: string;
      where: string;
      peer: string;
      attempts: number;
      at: number;
    }
  | { event: 'hung_up'; server_id: string; session: string; where: string; at: number }
  | {
      event: 'connection';
      session: string;
      server_id: string;
      peer: string;
      where: string;
      kind: string;
      state: 'open' | 'closed';
      bytes_in: number;
      bytes_out: number;
      at: number;
    }
  | {
      event: 'refused';
      session: string;
      where: string;
      peer: string | null;
      reason: string;
      explain?: string;
      at: number;
    }
  | { event: 'credentials'; session: string; change: string; at: number }
  | {
      event: 'version_check';
      server_id: string;
      session: string;
      version: string | null;
      version_check: string;
      at: number;
    }
  | {
      event: 'walltime';
      server_id: string;
      session: string;
      job_id: string;
      ends_at: number;
      left: number;
      threshold: number;
      at: number;
    }
  | {
      event: 'resubmitted';
      server_id: string;
      session: string;
      job_id: string;
      previous_job_id: string | null;
      at: number;
    }
  | { event: 'hub'; state: 'failed' | 'running'; reason: string; at: number };
