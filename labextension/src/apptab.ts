import { JupyterFrontEnd } from '@jupyterlab/application';
import { IFrame, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';

import { PROXY_NAMESPACE, WEB_KINDS } from './tokens';

/** Whether a server of `kind` is a web app (its card has "Open"). */
export function isWebKind(kind: string): boolean {
  return (WEB_KINDS as readonly string[]).includes(kind);
}

/** The app of server `id` through the server extension's proxy, under Jupyter's base URL (so
 * `/user/<name>/` under JupyterHub): the same origin as Lab, so Jupyter's own cookie
 * authenticates the frame, and the proxy strips it before the app sees the request. */
export function appURL(id: string): string {
  return URLExt.join(PageConfig.getBaseUrl(), PROXY_NAMESPACE, encodeURIComponent(id), '/');
}

/**
 * A web server's app in a main-area tab. The frame is sandboxed, but with scripts and the same
 * origin: a web app (trame, Panel, Bokeh) is its scripts and websockets, which reach back
 * through the proxy's same-origin URL. The tab keeps the server's id so that the layout
 * restorer opens it again after a reload.
 */
export class AppFrame extends IFrame {
  constructor(readonly serverId: string) {
    super({
      sandbox: [
        'allow-scripts',
        'allow-same-origin',
        'allow-forms',
        'allow-downloads',
        'allow-popups',
        'allow-modals'
      ],
      referrerPolicy: 'same-origin'
    });
    this.addClass('pc-app');
    this.node.dataset.server = serverId;
    this.url = appURL(serverId);
  }
}

export type AppTab = MainAreaWidget<AppFrame>;

/** The app tabs, for the restorer and for "show the one already open". */
export function appTracker(): WidgetTracker<AppTab> {
  return new WidgetTracker<AppTab>({ namespace: 'paraconnect-app' });
}

/** Open (or show again) the main-area tab with server `id`'s web app. */
export async function openApp(
  app: JupyterFrontEnd,
  tracker: WidgetTracker<AppTab>,
  id: string
): Promise<AppTab> {
  const open = tracker.find(w => w.content.serverId === id);
  if (open) {
    app.shell.activateById(open.id);
    return open;
  }
  const widget = new MainAreaWidget({ content: new AppFrame(id) });
  widget.id = `paraconnect-app-${id}`;
  widget.title.label = `${id} (app)`;
  widget.title.caption = `the web app of server ${id}, through paraconnect's tunnel`;
  widget.title.closable = true;
  await tracker.add(widget);
  app.shell.add(widget, 'main');
  app.shell.activateById(widget.id);
  return widget;
}
