# shellcheck shell=bash disable=SC2016,SC2086,SC1091  # kept as close to the real file as possible
# /etc/bash.bashrc of the hostctl stand-in image. Mimics Xilinx/Vitis-AI docker/conda/bashrc (Vitis AI 3.5).
#
# bash reads this file only for INTERACTIVE shells (`docker run -it IMAGE`, `bash -i`), never for
# `docker run IMAGE bash -c ...`: such commands keep running as root. That is the trap hostctl must avoid by
# doing the uid/gid mapping in its own shim (DESIGN.md section 6), and this image reproduces it on purpose.
#
# Deliberately left out from the real file: the banner, XRT/CUDA variables, and the background
# `sudo chown -R vitis-ai-user /opt/vitis_ai/conda &`; the conda env must stay owned by the image's
# original uid (issue #1287), which is the situation hostctl's non-interactive runs meet.
if [[ $EUID -eq 0 ]]; then
  echo "Setting up $USER 's environment in the Docker container..."
  if [[ -z "$1" ]]; then
    set -- "bash"
  fi
  if [[ $UID -eq 0 ]]; then
    echo -e "\e[1;91m WARNING: You are running Vitis AI Docker container as root. \e[m"
    echo -e "For security reasons, consider running as a regular user:"
    echo -e '\e[1;90m    $ docker run -e UID=$(id -u) -e GID=$(id -g) args...\e[m'
    echo -e "You will be running as vitis-ai-user with non-root UID/GID in Vitis AI Docker container. \n"
  else
    usermod -u $UID vitis-ai-user
    groupmod -g $GID vitis-ai-group
    echo -e "Running as vitis-ai-user with ID $(id -u) and group $(id -g) \n"
  fi
  exec /usr/local/bin/gosu vitis-ai-user "$@"
fi
. /opt/vitis_ai/conda/etc/profile.d/conda.sh
conda activate base
export PS1="\[\e[91m\]Vitis-AI\[\e[m\] \w > "
