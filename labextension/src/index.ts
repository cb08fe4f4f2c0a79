import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { LabIcon } from '@jupyterlab/ui-components';

import { Actions } from './actions';
import { appTracker, isWebKind, openApp } from './apptab';
import { HubEvent } from './api';
import { HubModel } from './model';
import { NotebookBridge } from './notebook';
import { ParaconnectPanel } from './panel';
import { CommandIDs, KEY_TYPES, LEVELS, PLUGIN_ID } from './tokens';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
  '<path d="M12 2 4 5v6c0 5 3.4 9.7 8 11 4.6-1.3 8-6 8-11V5l-8-3zm0 2.2 6 2.2V11c0 4-2.6 7.7-6 8.9-3.4-1.2-6-4.9-6-8.9V6.4l6-2.2z"/>' +
  '<path d="M8 12h3v-2l3 3-3 3v-2H8z"/></g></svg>';

export const paraconnectIcon = new LabIcon({ name: 'paraconnect:icon', svgstr: ICON_SVG });

/** Tell the user when a server phones home or a connection is refused (with the one line). */
function notify(model: HubModel, ev: HubEvent): void {
  if (ev.event === 'phone_home') {
    Notification.success(`Server ${ev.server_id} phoned home from ${ev.where}`, {
      autoClose: 5000
    });
  } else if (ev.event === 'hub' && ev.state === 'failed') {
    Notification.error(`The paraconnect hub failed and is restarting: ${ev.reason}`, {
      autoClose: 10000
    });
  } else if (ev.event === 'refused') {
    // Tunnel events name the session by its id; say its name.
    const session =
      model.sessions.find(s => s.id === ev.session || s.name === ev.session)?.name ?? ev.session;
    const who = ev.peer ? `${ev.peer} at ${ev.where}` : ev.where;
    Notification.warning(`Refused ${who} (session '${session}'): ${ev.explain || ev.reason}`, {
      autoClose: 10000
    });
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'A side panel for paraconnect sessions, servers and friends.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, ILauncher],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    launcher: ILauncher | null
  ) => {
    const model = new HubModel();
    const actions = new Actions(model, new NotebookBridge(app, model), app);
    const panel = new ParaconnectPanel(model, actions);
    panel.title.icon = paraconnectIcon;
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, panel.id);
    model.event.connect((_, ev) => notify(model, ev));
    void model.reload();
    model.connect();

    const { commands } = app;
    commands.addCommand(CommandIDs.open, {
      label: 'paraconnect: Show the Panel',
      execute: () => app.shell.activateById(panel.id)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'paraconnect: Reload from the Hub',
      execute: () => model.reload()
    });
    commands.addCommand(CommandIDs.createSession, {
      label: 'paraconnect: Create a Session…',
      execute: async () => {
        const name = await InputDialog.getText({
          title: 'New paraconnect session',
          placeholder: 'name'
        });
        if (name.button.accept && name.value) {
          await actions.createSession(name.value, KEY_TYPES[0], 365, LEVELS[0]);
        }
      }
    });
    const openForm = (form: string) => () => {
      app.shell.activateById(panel.id);
      const details = panel.node.querySelector<HTMLDetailsElement>(`details[data-form="${form}"]`);
      if (details) {
        details.open = true;
        details.scrollIntoView({ block: 'nearest' });
        details.querySelector<HTMLElement>('input, select')?.focus();
      }
    };
    commands.addCommand(CommandIDs.launchServer, {
      label: 'paraconnect: Launch a Server…',
      execute: openForm('launch')
    });
    commands.addCommand(CommandIDs.copyAgentCommand, {
      label: 'paraconnect: Copy an Agent Command…',
      execute: openForm('launch')
    });
    commands.addCommand(CommandIDs.issueFriend, {
      label: 'paraconnect: Issue a Friend Bundle…',
      execute: openForm('friend')
    });

    const apps = appTracker();
    commands.addCommand(CommandIDs.openApp, {
      label: args => (args.id ? `Open the app of ${args.id}` : 'paraconnect: Open a Web App'),
      execute: args => openApp(app, apps, String(args.id))
    });
    // The app tabs come back after a reload, each on its server's proxy URL.
    void restorer?.restore(apps, {
      command: CommandIDs.openApp,
      args: w => ({ id: w.content.serverId }),
      name: w => w.content.serverId
    });
    // A link a notebook's srv.open() wrote ("open in a tab") opens the tab, not a new page.
    document.addEventListener('click', ev => {
      const link = (ev.target as Element | null)?.closest?.('a[data-paraconnect-app]');
      const id = link?.getAttribute('data-paraconnect-app');
      if (id) {
        ev.preventDefault();
        void commands.execute(CommandIDs.openApp, { id });
      }
    });

    // The launch form prefilled for one kind: a web app needs its command or app file, so
    // a tile cannot launch with defaults alone.
    commands.addCommand(CommandIDs.launchKind, {
      label: args => (args.kind ? `${args.kind} server` : 'paraconnect: Launch a Kind…'),
      caption: args => `Launch a paraconnect ${args.kind ?? ''} server (the panel's form)`,
      icon: args => (args.kind ? paraconnectIcon : undefined),
      execute: args => {
        openForm('launch')();
        const kind = panel.node.querySelector<HTMLSelectElement>(
          'details[data-form="launch"] select[name="kind"]'
        );
        if (kind && args.kind && [...kind.options].some(o => o.value === args.kind)) {
          kind.value = String(args.kind);
          kind.dispatchEvent(new Event('change', { bubbles: true }));
        }
      }
    });
    // One tile for each web kind the hub offers (its launch options, once it answers).
    const tiles = new Set<string>();
    const addTiles = () => {
      for (const kind of model.launchOptions?.kinds ?? []) {
        if (launcher && isWebKind(kind.name) && !tiles.has(kind.name)) {
          tiles.add(kind.name);
          launcher.add({
            command: CommandIDs.launchKind,
            args: { kind: kind.name },
            category: 'paraconnect',
            rank: tiles.size
          });
        }
      }
    };
    model.changed.connect(addTiles);
    addTiles();

    if (palette) {
      // The app and kind commands need their argument: the card and the tiles give it.
      const withArgs: string[] = [CommandIDs.openApp, CommandIDs.launchKind];
      for (const command of Object.values(CommandIDs).filter(c => !withArgs.includes(c))) {
        palette.addItem({ command, category: 'paraconnect' });
      }
    }
  }
};

export default plugin;
