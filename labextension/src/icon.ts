import { LabIcon } from '@jupyterlab/ui-components';

/** A shipping container, drawn in the theme's icon colour (`jp-icon3`). */
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M2 6.5 12 3l10 3.5v11L12 21 2 17.5zm2 1.4v8.2l7 2.5V10.4zm9 2.5v8.2l7-2.5V7.9zM5.1 6.6 12 9l6.9-2.4L12 4.2z"/>
    <path d="M5.5 10.2l1.3.5v5.8l-1.3-.5zm2.6 1l1.3.5v5.8l-1.3-.5z"/>
  </g>
</svg>`;

export const containersIcon = new LabIcon({
  name: 'jupyter-dss-containers:containers',
  svgstr: svg
});
