import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';

import { deathNotifier } from './deaths';
import { containersIcon } from './icon';
import { ContainersPanel } from './panel';

const PLUGIN_ID = 'jupyter-dss-containers:sidebar';

namespace CommandIDs {
  export const open = 'dss-containers:open';
  export const refresh = 'dss-containers:refresh';
}

/** The "Containers" sidebar on the left. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'A sidebar with execution configurations, container kernels and jobs.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const panel = new ContainersPanel({
      commands: app.commands,
      serviceManager: app.serviceManager
    });
    app.shell.add(panel, 'left', { rank: 600, type: 'Containers' });
    deathNotifier.start(); // a kernel's death is told whether the sidebar is open or not
    restorer?.add(panel, 'dss-containers-sidebar');

    app.commands.addCommand(CommandIDs.open, {
      label: 'Show Containers',
      caption: 'Show the Containers sidebar',
      icon: containersIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Containers',
      execute: () => panel.refreshAll()
    });
    palette?.addItem({ command: CommandIDs.open, category: 'Containers' });
    palette?.addItem({ command: CommandIDs.refresh, category: 'Containers' });
  }
};

export default plugin;
