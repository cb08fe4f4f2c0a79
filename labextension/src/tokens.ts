/**
 * Constants shared by the panel, the commands and the tests. Side-effect free: importing this
 * module never touches the DOM or the network.
 */

/** The plugin's id (also the settings and extension name in JupyterLab). */
export const PLUGIN_ID = 'paraconnect:plugin';

/** The REST base of the server extension, relative to Jupyter's base URL (docs/hub-api.md). */
export const API_NAMESPACE = 'paraconnect/api';

/** The websocket that streams the hub's events, relative to the API base. */
export const EVENTS_ENDPOINT = 'events';

/** A web app's reverse proxy in the server extension, relative to Jupyter's base URL:
 * `<base_url>paraconnect/proxy/<server-id>/` (authenticated, the user's cookies stripped). */
export const PROXY_NAMESPACE = 'paraconnect/proxy';

/** The side panel's widget id (stable, so the layout restorer and tests can find it). */
export const PANEL_ID = 'paraconnect-panel';

/** Palette commands. */
export namespace CommandIDs {
  export const open = 'paraconnect:open';
  export const refresh = 'paraconnect:refresh';
  export const createSession = 'paraconnect:create-session';
  export const launchServer = 'paraconnect:launch-server';
  export const copyAgentCommand = 'paraconnect:copy-agent-command';
  export const issueFriend = 'paraconnect:issue-friend';
  /** A web server's app in a main-area tab (args: `id`, the server's id). */
  export const openApp = 'paraconnect:open-app';
  /** The launch form, prefilled for one kind (args: `kind`): the launcher's tiles. */
  export const launchKind = 'paraconnect:launch-kind';
}

export const KEY_TYPES = ['ec-p256', 'ed25519', 'rsa-3072'] as const;
export const LEVELS = ['mutual', 'encrypt', 'none'] as const;
export const SERVER_KINDS = ['builtin', 'pvserver', 'command', 'web', 'trame'] as const;
export const MODES = ['reverse', 'forward'] as const;

/** The kinds whose server is a web app (paraconnect.vocab.WEB_KINDS): their card has "Open",
 * the launcher a tile each, where the hub offers them. */
export const WEB_KINDS = ['web', 'trame'] as const;

/** Only a fallback until the hub answers: the launch form offers the launchers GET /hub lists
 * (paraconnect.servers.register_launcher), so a new launcher needs no change here. */
export const LAUNCHERS = ['local'] as const;

/** Server states (paraconnect.vocab.ServerState), grouped by how the badge shows them.
 * tests/test_vocab.py checks that these are exactly the states Python defines. */
export const STATE_TONE: Record<string, 'ok' | 'busy' | 'idle' | 'bad'> = {
  submitted: 'busy',
  starting: 'busy',
  waiting: 'busy',
  unreachable: 'bad',
  connected: 'ok',
  idle: 'idle',
  stopped: 'idle',
  failed: 'bad'
};

/** Final states (paraconnect.vocab.FINAL_STATES): the server will not come back by itself. */
export const FINAL_STATES = new Set(['stopped', 'failed']);

/** How often the panel asks again while the hub is down (REST 503: Jupyter restarts it). */
export const HUB_RETRY_MS = 3000;
